"""Pure rules of the node agent, kept apart from its I/O: the Node and Lease
objects it writes, a container's environment, and the pod status it reports,
following what the kubelet does."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

GPU = "nvidia.com/gpu"
# What NVIDIA's GPU feature discovery puts on a node with GPUs (Kueue flavors select on it).
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
POD_IP = "127.0.0.1"
MAX_MESSAGE_BYTES = 4096  # the kubelet's cap on a termination message
FALLBACK_LOG_LINES = 80  # FallbackToLogsOnError: at most this many log lines ...
FALLBACK_LOG_BYTES = 2048  # ... and at most this many bytes

Lookup = Callable[[str, str, bool], "Mapping[str, str] | None"]


class ConfigError(Exception):
    """The pod cannot start yet (CreateContainerConfigError): a missing secret, a bad ref."""


def now_rfc3339(now: datetime.datetime) -> str:
    return now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro(now: datetime.datetime) -> str:
    return now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- nodes -------------------------------------------------------------------


def node_labels(name: str, gpus: int) -> dict[str, str]:
    """The labels a node registers with: the kubelet's, plus the GPU feature
    discovery's `nvidia.com/gpu.present: "true"` when it has GPUs."""
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    }
    if gpus > 0:
        labels[GPU_PRESENT_LABEL] = "true"
    return labels


def build_node(name: str, labels: Mapping[str, str] | None = None, gpus: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {**node_labels(name, gpus), **(labels or {})},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
    }


def build_node_status(
    name: str, gpus: int, port: int, version: str, now: datetime.datetime, since: str
) -> dict[str, Any]:
    resources = {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    resources[GPU] = str(gpus)
    stamp = now_rfc3339(now)

    def cond(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": since,
        }

    return {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "enough memory"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "enough PIDs"),
            cond("Ready", "True", "KubeletReady", "the kubetune node agent is posting ready"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": POD_IP},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": name,
            "systemUUID": name,
            "bootID": name,
            "kernelVersion": "",
            "osImage": "kubetune local node agent",
            "containerRuntimeVersion": "process://0.1",
            "kubeletVersion": version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


def build_lease(name: str, node_uid: str, now: datetime.datetime) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": "kube-node-lease",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}
            ],
        },
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro(now)},
    }


# --- environment -------------------------------------------------------------

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


# --- pod status --------------------------------------------------------------


@dataclass
class ContainerView:
    """What the agent knows of one container, enough to write its status."""

    name: str
    image: str
    init: bool = False
    restart_count: int = 0
    pid: int | None = None
    started_at: str | None = None
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    terminated: dict[str, Any] | None = None
    last_terminated: dict[str, Any] | None = None

    @property
    def running(self) -> bool:
        return self.started_at is not None and self.terminated is None and self.waiting is None


def build_terminated(
    returncode: int, started_at: str, finished_at: str, message: str, pid: int | None
) -> dict[str, Any]:
    """A terminated state from a Popen return code (negative: killed by that signal)."""
    signal_no = -returncode if returncode < 0 else 0
    exit_code = 128 + signal_no if signal_no else returncode
    state: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": started_at,
        "finishedAt": finished_at,
        "containerID": f"process://{pid}" if pid else None,
    }
    if signal_no:
        state["signal"] = signal_no
    if message:
        state["message"] = message
    return state


def termination_message(file_text: bytes, policy: str, exit_code: int, log_tail: bytes) -> str:
    message = file_text[:MAX_MESSAGE_BYTES]
    if not message.strip() and exit_code != 0 and policy == "FallbackToLogsOnError":
        lines = log_tail.splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
        message = b"".join(lines)[-FALLBACK_LOG_BYTES:]
    return message.decode(errors="replace")


def should_restart(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def compute_phase(policy: str, inits: list[ContainerView], apps: list[ContainerView]) -> str:
    """The kubelet's getPhase, for containers the agent tracks."""
    for c in inits:
        if c.terminated is None or c.terminated["exitCode"] != 0:
            if c.terminated is not None and not should_restart(policy, c.terminated["exitCode"]):
                return "Failed"
            return "Pending"
    if any(c.running for c in apps):
        return "Running"
    if any(c.terminated is None and c.last_terminated is None for c in apps):
        return "Pending"  # a container never started yet
    if any(c.terminated is None for c in apps):
        return "Running"  # waiting to restart
    if policy == "Always":
        return "Running"
    if all(c.terminated is not None and c.terminated["exitCode"] == 0 for c in apps):
        return "Succeeded"
    if policy == "OnFailure":
        return "Running"
    return "Failed"


def _state(view: ContainerView) -> dict[str, Any]:
    if view.terminated is not None:
        return {"terminated": view.terminated, "running": None, "waiting": None}
    if view.waiting is not None:
        reason, message = view.waiting
        waiting = {"reason": reason, **({"message": message} if message else {})}
        return {"waiting": waiting, "running": None, "terminated": None}
    return {"running": {"startedAt": view.started_at}, "waiting": None, "terminated": None}


def build_container_status(view: ContainerView) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": view.name,
        "image": view.image or "local",
        "imageID": "",
        "ready": view.running and not view.init,
        "started": view.running,
        "restartCount": view.restart_count,
        "state": _state(view),
        "lastState": {"terminated": view.last_terminated} if view.last_terminated else {},
    }
    if view.pid:
        status["containerID"] = f"process://{view.pid}"
    if view.init:
        status["ready"] = view.terminated is not None and view.terminated["exitCode"] == 0
    return status


@dataclass
class ConditionClock:
    """Remembers when each condition last flipped, so lastTransitionTime only moves then."""

    seen: dict[str, tuple[str, str]] = field(default_factory=dict)

    def condition(self, kind: str, ok: bool, now: str, reason: str = "") -> dict[str, Any]:
        status = "True" if ok else "False"
        prev = self.seen.get(kind)
        since = prev[1] if prev and prev[0] == status else now
        self.seen[kind] = (status, since)
        cond: dict[str, Any] = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": since,
        }
        if reason and not ok:
            cond["reason"] = reason
        return cond


def build_pod_status(
    *,
    uid: str,
    policy: str,
    inits: list[ContainerView],
    apps: list[ContainerView],
    sandbox_ready: bool,
    start_time: str,
    clock: ConditionClock,
    now: str,
    phase_override: tuple[str, str, str] | None = None,
) -> dict[str, Any]:
    """The status patch (strategic merge on /status): it names only the conditions
    the kubelet owns, so others (PodScheduled, DisruptionTarget) are kept."""
    phase = compute_phase(policy, inits, apps)
    reason = message = ""
    if phase_override:
        phase, reason, message = phase_override
    terminal = phase in ("Succeeded", "Failed")
    initialized = all(c.terminated is not None and c.terminated["exitCode"] == 0 for c in inits)
    ready = not terminal and bool(apps) and all(c.running for c in apps)
    not_ready_reason = "PodCompleted" if terminal else "ContainersNotReady"
    conditions = [
        clock.condition("PodReadyToStartContainers", sandbox_ready and not terminal, now),
        clock.condition("Initialized", initialized, now, "ContainersNotInitialized"),
        clock.condition("ContainersReady", ready, now, not_ready_reason),
        clock.condition("Ready", ready, now, not_ready_reason),
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "startTime": start_time,
        "hostIP": POD_IP,
        "hostIPs": [{"ip": POD_IP}],
        "podIP": POD_IP,
        "podIPs": [{"ip": POD_IP}],
        "conditions": conditions,
        "containerStatuses": [build_container_status(c) for c in apps],
    }
    if inits:
        status["initContainerStatuses"] = [build_container_status(c) for c in inits]
    if reason:
        status.update(reason=reason, message=message)
    # metadata.uid is a precondition: a patch never lands on a namesake pod.
    return {"metadata": {"uid": uid}, "status": status}
