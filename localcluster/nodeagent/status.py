"""The pod status the node agent reports, following the kubelet: each
container's state (a process's exit read as a terminated state, its
termination message, whether it restarts), the pod's phase and conditions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from localcluster.nodeagent.node import POD_IP

MAX_MESSAGE_BYTES = 4096  # the kubelet's cap on a termination message
FALLBACK_LOG_LINES = 80  # FallbackToLogsOnError: at most this many log lines ...
FALLBACK_LOG_BYTES = 2048  # ... and at most this many bytes


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
