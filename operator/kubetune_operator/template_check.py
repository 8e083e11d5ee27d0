"""The shape of `spec.template` the worker pod's builder relies on, checked
before a pod is built: the CRD's schema refuses these at apply, but a job
created before that schema (or under a looser one) must end Failed with the
field named, not fail every reconcile with a KeyError.

Pure: a function of the template alone.
"""

from __future__ import annotations

from typing import Any

_PATH = "spec.template"


def template_problem(template: Any) -> str:
    """ "" when the template has the shape the pod builder reads, else one line
    naming the first field at fault and what it must be."""
    if template is None:
        return ""
    if not isinstance(template, dict):
        return f"{_PATH} must be an object (a pod template)"
    meta = template.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict):
            return f"{_PATH}.metadata must be an object"
        for key in ("labels", "annotations"):
            problem = _string_map(meta.get(key), f"{_PATH}.metadata.{key}")
            if problem:
                return problem
    spec = template.get("spec")
    if spec is None:
        return ""
    if not isinstance(spec, dict):
        return f"{_PATH}.spec must be an object (a PodSpec)"
    problem = _named_list(spec.get("volumes"), f"{_PATH}.spec.volumes")
    if problem:
        return problem
    containers = spec.get("containers")
    problem = _named_list(containers, f"{_PATH}.spec.containers")
    if problem:
        return problem
    for i, container in enumerate(containers or []):
        for key in ("env", "volumeMounts"):
            problem = _named_list(container.get(key), f"{_PATH}.spec.containers[{i}].{key}")
            if problem:
                return problem
    return ""


def _string_map(value: Any, path: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return f"{path} must map strings to strings"
    return ""


def _named_list(value: Any, path: str) -> str:
    """A list of objects, each with a non-empty string `name`."""
    if value is None:
        return ""
    if not isinstance(value, list):
        return f"{path} must be a list"
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            return f"{path}[{i}] must be an object"
        name = item.get("name")
        if not isinstance(name, str) or not name:
            return f"{path}[{i}].name is required: give each entry a name"
    return ""
