"""The vocabulary of a TrainableJob's status (phases, conditions, reasons) and
typed views of what the operator reads: the job, its pods, the worker's progress.

Pure: no kopf, no Kubernetes client, no boto3. Everything here is built from
plain dicts so the state machine can be tested without a cluster.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass, field
from typing import Any

API_GROUP = "kubetune.io"
API_VERSION = "v1alpha1"
KIND = "TrainableJob"
PLURAL = "trainablejobs"

LABEL_JOB = "kubetune.io/job"
LABEL_JOB_UID = "kubetune.io/job-uid"
LABEL_ATTEMPT = "kubetune.io/attempt"
LABEL_SWEEP = "kubetune.io/sweep"  # on a TrainableSweep's trials
WORKER_CONTAINER = "worker"


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


@dataclass(frozen=True)
class Progress:
    """The worker's progress file (protocol.PROGRESS_FILE) as read from storage."""

    run_id: str | None
    state: str
    iteration: int
    last_result: dict[str, Any] = field(default_factory=dict)
    latest_checkpoint: dict[str, Any] | None = None
    best_checkpoint: dict[str, Any] | None = None
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    message: str = ""
    updated: float | None = None  # the worker's clock, refreshed at least every 30 s

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        """Parse a document from storage or a push: both are untrusted, so each
        field must have its type (ValueError/TypeError otherwise) and checkpoint
        entries keep only their three fields, bounded."""
        if not isinstance(data, dict):
            raise TypeError("a progress document is a JSON object")
        last = data.get("last_result") or {}
        if not isinstance(last, dict):
            raise TypeError("last_result is not an object")
        kept = data.get("checkpoints") or []
        if not isinstance(kept, list):
            raise TypeError("checkpoints is not a list")
        run_id = data.get("run_id")
        updated = data.get("updated")
        return cls(
            run_id=None if run_id is None else str(run_id)[:128],
            state=str(data.get("state") or "")[:32],
            iteration=count(data.get("iteration"), "iteration"),
            last_result=last,
            latest_checkpoint=checkpoint_entry(data.get("latest_checkpoint")),
            best_checkpoint=checkpoint_entry(data.get("best_checkpoint")),
            checkpoints=[c for c in map(checkpoint_entry, kept[-MAX_CHECKPOINT_ENTRIES:]) if c],
            reason=str(data.get("reason") or "")[:128],
            message=str(data.get("message") or "")[:1024],
            updated=None if updated is None else unix_time(updated, "updated"),
        )

    def within(self, run_uri: str) -> tuple[Progress, list[str]]:
        """This progress without checkpoint entries outside the job's own folder
        (`<run_uri>/checkpoint_<digits>`), and the paths it dropped: status never
        points a restore or a download at another run's (or anyone's) files."""
        dropped: list[str] = []

        def own(entry: dict[str, Any] | None) -> dict[str, Any] | None:
            if entry is None or is_own_checkpoint(run_uri, entry.get("path")):
                return entry
            dropped.append(str(entry.get("path")))
            return None

        kept = [c for c in self.checkpoints if own(c)]
        cleaned = dataclasses.replace(
            self,
            latest_checkpoint=own(self.latest_checkpoint),
            best_checkpoint=own(self.best_checkpoint),
            checkpoints=kept,
        )
        return cleaned, list(dict.fromkeys(dropped))


MAX_CHECKPOINT_ENTRIES = 10


def checkpoint_entry(value: Any) -> dict[str, Any] | None:
    """A checkpoint as status shows it: {path, iteration, time}, nothing else."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError("a checkpoint entry is not an object")
    entry: dict[str, Any] = {
        "path": str(value.get("path") or "")[:1024],
        "iteration": count(value.get("iteration"), "a checkpoint's iteration"),
    }
    when = value.get("time")
    if isinstance(when, str) and _RFC3339.fullmatch(when):
        entry["time"] = when
    return entry


# Status integers are int64 and JSON numbers doubles: counts above 2**53 are
# not ones a worker reached, and the API would refuse or round them.
MAX_COUNT = 2**53


def count(value: Any, what: str) -> int:
    """A non-negative integer from an untrusted document (None is 0); ValueError
    naming the field otherwise (a float, a string, NaN, a negative number)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ValueError(f"{what} must be an integer from 0 to 2**53, not {value!r:.40}")
    return value


def unix_time(value: Any, what: str) -> float:
    """Unix seconds from an untrusted document: a finite, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number of seconds, not {value!r:.40}")
    if not 0 <= value <= 1e11:  # also refuses NaN and the infinities
        raise ValueError(f"{what} is not a time: {value!r:.40}")
    return float(value)


_CHECKPOINT_NAME = re.compile(r"checkpoint_\d{6,}")


def is_own_checkpoint(run_uri: str, path: Any) -> bool:
    """Whether path is a checkpoint folder directly in the run folder run_uri."""
    base = run_uri.rstrip("/") + "/"
    return (
        isinstance(path, str)
        and path.startswith(base)
        and _CHECKPOINT_NAME.fullmatch(path[len(base) :]) is not None
    )


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
