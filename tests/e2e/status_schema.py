"""Checks that a TrainableJob's status is one the operator may write: valid
against the CRD's own status schema (what the apiserver enforces), strict JSON,
with a phase from the enum and well-formed conditions."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
STICKY = ("Complete", "Failed", "Finished")


@functools.cache
def _validator() -> jsonschema.Draft7Validator:
    crd = yaml.safe_load((REPO / "crds" / "kubetune.io_trainablejobs.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    return jsonschema.Draft7Validator(schema)


def status_problems(status: dict[str, Any]) -> list[str]:
    """Everything wrong with status ([] when it is valid)."""
    problems = [
        f"{'/'.join(map(str, e.absolute_path)) or 'status'}: {e.message}"
        for e in _validator().iter_errors(status)
    ]
    try:
        json.dumps(status, allow_nan=False)
    except ValueError as exc:
        problems.append(f"not strict JSON: {exc}")
    conditions = status.get("conditions") or []
    types = [c.get("type") for c in conditions]
    if len(types) != len(set(types)):
        problems.append(f"a condition type appears twice: {types}")
    for c in conditions:
        if not _RFC3339.fullmatch(str(c.get("lastTransitionTime"))):
            problems.append(f"condition {c.get('type')}: lastTransitionTime is not RFC 3339")
    by_type = {c.get("type"): c.get("status") for c in conditions}
    terminal = status.get("phase") in ("Succeeded", "Failed")
    if terminal and by_type.get("Finished") != "True":
        problems.append(f"phase {status.get('phase')} without Finished=True")
    return problems
