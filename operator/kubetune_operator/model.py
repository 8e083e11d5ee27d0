"""The vocabulary of a TrainableJob's status (phases, conditions, reasons) and
typed views of what the operator reads: the job, its pods, the worker's progress.

Pure: no kopf, no Kubernetes client, no boto3. Everything here is built from
plain dicts so the state machine can be tested without a cluster.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from kubetune_contract import WORKER_CONTAINER


class Phase(str, enum.Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDING = "Suspending"
    SUSPENDED = "Suspended"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED.value, Phase.FAILED.value})


def is_terminal(phase: str | None) -> bool:
    return phase in TERMINAL_PHASES


class Cond:
    """Condition types: the API. The phase is only their summary."""

    RUNNING = "Running"
    SUSPENDED = "Suspended"
    CHECKPOINTED = "Checkpointed"
    COMPLETE = "Complete"
    FAILED = "Failed"
    FINISHED = "Finished"
    # Only on jobs queued through Kueue: whether their Workload is admitted.
    ADMITTED = "Admitted"

    ALL = (RUNNING, SUSPENDED, CHECKPOINTED, COMPLETE, FAILED, FINISHED)
    # Once True these never return to False (a finished job stays finished).
    STICKY = frozenset({COMPLETE, FAILED, FINISHED})


class Reason:
    """Condition and event reasons: one CamelCase word each."""

    INITIALIZING = "Initializing"
    STARTING = "Starting"
    UNSCHEDULABLE = "Unschedulable"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    PREEMPTED = "Preempted"
    SUSPENDING = "Suspending"
    SUSPENDED = "UserSuspended"
    RESUMED = "Resumed"
    NOT_SUSPENDED = "NotSuspended"
    CHECKPOINT_COMMITTED = "CheckpointCommitted"
    NO_CHECKPOINT = "NoCheckpointYet"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    NOT_FINISHED = "NotFinished"
    MAX_FAILURES = "MaxFailuresExceeded"
    DEADLINE = "DeadlineExceeded"
    INVALID_CHECKPOINT = "InvalidCheckpoint"
    INVALID_SPEC = "InvalidSpec"
    HEARTBEAT_STALE = "HeartbeatStale"
    QUEUED = "Queued"
    ADMITTED = "Admitted"
    EVICTED = "Evicted"


@dataclass(frozen=True)
class JobView:
    """The parts of a TrainableJob the operator decides from."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> JobView:
        meta = body.get("metadata") or {}
        return cls(
            name=meta["name"],
            namespace=meta.get("namespace") or "default",
            uid=meta.get("uid") or "",
            generation=int(meta.get("generation") or 0),
            spec=dict(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
            labels=dict(meta.get("labels") or {}),
        )

    @property
    def suspend(self) -> bool:
        return bool(self.spec.get("suspend", False))

    @property
    def max_failures(self) -> int:
        return int(self.spec.get("maxFailures", 3))

    @property
    def storage(self) -> dict[str, Any]:
        return dict(self.spec.get("storage") or {})

    @property
    def run_uri(self) -> str:
        """The job's own folder: <storage.uri>/<namespace>/<name>."""
        return f"{self.storage.get('uri', '').rstrip('/')}/{self.namespace}/{self.name}"


def worker_pod_name(job_name: str, attempt: int) -> str:
    return f"{job_name}-worker-{attempt}"


# A waiting container's reasons (the kubelet's) that say it cannot start until
# something outside the pod changes: a Secret or ConfigMap created, an image
# pushed or its name fixed. Each may heal, so none fails the job; ContainerCreating
# and PodInitializing are a start in progress, not a problem.
CANNOT_START_REASONS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "RunContainerError",
    }
)


@dataclass(frozen=True)
class PodView:
    """What the operator needs to know about one worker pod."""

    name: str
    uid: str
    phase: str  # Pending, Running, Succeeded, Failed, Unknown
    deleting: bool
    exit_code: int | None = None
    exit_reason: str = ""  # Completed, Error, OOMKilled ...
    exit_message: str = ""
    disrupted: bool = False  # a DisruptionTarget condition: evicted or preempted
    disruption_message: str = ""
    unschedulable_message: str = ""
    # Why the worker container cannot start, in the kubelet's words (a missing
    # Secret, an image that does not pull); "" while it starts or runs.
    waiting_reason: str = ""
    waiting_message: str = ""

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @classmethod
    def from_pod(cls, pod: dict[str, Any]) -> PodView:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        disruption = conditions.get("DisruptionTarget") or {}
        scheduled = conditions.get("PodScheduled") or {}
        unschedulable = ""
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            unschedulable = scheduled.get("message") or "no node fits the worker's requests"
        exit_code, exit_reason, exit_message = None, "", ""
        waiting_reason, waiting_message = "", ""
        for cs in status.get("containerStatuses") or []:
            if cs.get("name") != WORKER_CONTAINER:
                continue
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in CANNOT_START_REASONS:
                waiting_reason = str(waiting["reason"])
                waiting_message = str(waiting.get("message") or "").strip()
            terminated = (cs.get("state") or {}).get("terminated")
            if terminated:
                exit_code = terminated.get("exitCode")
                exit_reason = terminated.get("reason") or ""
                exit_message = (terminated.get("message") or "").strip()
        return cls(
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            phase=status.get("phase") or "Pending",
            deleting=bool(meta.get("deletionTimestamp")),
            exit_code=exit_code,
            exit_reason=exit_reason,
            exit_message=exit_message,
            disrupted=disruption.get("status") == "True",
            disruption_message=disruption.get("message") or disruption.get("reason") or "",
            unschedulable_message=unschedulable,
            waiting_reason=waiting_reason,
            waiting_message=waiting_message,
        )
