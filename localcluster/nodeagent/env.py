"""A container's environment, built from its pod's spec as the kubelet builds
it: $(VAR) expansion, fieldRef and resourceFieldRef values, secrets and
configMaps (envFrom and valueFrom), and the GPUs a container asks for."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Any

from localcluster.nodeagent.node import GPU, POD_IP

Lookup = Callable[[str, str, bool], "Mapping[str, str] | None"]


class ConfigError(Exception):
    """The pod cannot start yet (CreateContainerConfigError): a missing secret, a bad ref."""


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names expand, $$ escapes, the rest stays."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return _VAR.sub(sub, text)


def field_value(pod: Mapping[str, Any], path: str) -> str:
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.hostIP": POD_IP,
        "status.hostIPs": POD_IP,
        "status.podIP": POD_IP,
        "status.podIPs": POD_IP,
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str(meta.get(match.group(1), {}).get(match.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1], {})
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ConfigError(f"unsupported fieldRef {path!r}")


_SUFFIX: dict[str, Decimal | int] = {
    "": 1,
    "m": Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(text: str) -> Decimal:
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ConfigError(f"cannot read the quantity {text!r}")
    return Decimal(match.group(1)) * Decimal(_SUFFIX[match.group(2)])


def resource_value(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    kind, _, name = ref.get("resource", "").partition(".")
    resources = container.get("resources", {})
    value = resources.get(kind, {}).get(name)
    if value is None and kind == "requests":
        value = resources.get("limits", {}).get(name)
    if value is None:  # an unset limit reads as the node's allocatable, as in the kubelet
        value = {"cpu": "8", "memory": "16Gi", "ephemeral-storage": "100Gi"}.get(name, "0")
    divisor = quantity(ref.get("divisor") or "1")
    return str((quantity(value) / divisor).to_integral_value(rounding=ROUND_CEILING))


def build_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    base: Mapping[str, str],
    service: Mapping[str, str],
    lookup_secret: Lookup,
    lookup_configmap: Lookup,
) -> dict[str, str]:
    """The container's environment: base, then service variables, envFrom, env.

    `lookup_*(name, key_or_empty, optional)` return the object's data or None."""
    env: dict[str, str] = {**base, **service}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        for kind, lookup in (("secretRef", lookup_secret), ("configMapRef", lookup_configmap)):
            ref = source.get(kind)
            if ref:
                data = lookup(ref["name"], "", bool(ref.get("optional")))
                env.update({prefix + k: v for k, v in (data or {}).items()})
    for var in container.get("env", []):
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        src = var["valueFrom"]
        if "fieldRef" in src:
            env[name] = field_value(pod, src["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in src:
            env[name] = resource_value(container, src["resourceFieldRef"])
        else:
            kind, lookup = (
                ("secretKeyRef", lookup_secret)
                if "secretKeyRef" in src
                else ("configMapKeyRef", lookup_configmap)
            )
            ref = src.get(kind)
            if not ref:
                raise ConfigError(f"env {name}: unsupported valueFrom {sorted(src)}")
            data = lookup(ref["name"], ref["key"], bool(ref.get("optional")))
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(f"couldn't find key {ref['key']} in {kind[:-6]} {ref['name']}")
            env[name] = data[ref["key"]]
    return env


def gpu_count(container: Mapping[str, Any]) -> int:
    resources = container.get("resources", {})
    value = resources.get("limits", {}).get(GPU, resources.get("requests", {}).get(GPU, 0))
    return int(value)
