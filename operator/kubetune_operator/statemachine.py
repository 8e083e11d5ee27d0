"""The one state machine of a TrainableJob.

`compute_decision(job, pods, progress, now)` maps what the operator observed to
the job's next status and the few actions that make the world match it
(create the worker pod, delete pods, post events). It is pure: the handler
does the reading before and the writing after, and writes status once.

Invariants (each test-covered in tests/unit/operator/test_statemachine.py):
- at most one worker pod per job exists at a time: a new attempt's pod is only
  created once every older pod of the job is gone;
- a pod's name is recorded in status (`workerPod`) before the pod is created;
- each ended attempt is counted once, as a failure or a preemption, in the
  same status write that moves `workerPod` to the next attempt;
- a terminal phase is never left;
- a job queued through Kueue runs a worker pod only while its Workload is
  admitted; an eviction stops the worker the lossless way and counts one
  preemption.

One file on purpose: the invariants above are checked against one function
and the helpers it alone calls, so they read top to bottom in one place.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kubetune_contract import (
    EXIT_REASONS,
    EXIT_STOPPED,
    EXIT_STORAGE,
    HOPELESS_EXIT_CODES,
    Progress,
    is_within_run,
)
from kubetune_contract.progress import MAX_CHECKPOINTS, MAX_RESULT_KEYS, MAX_STRING
from kubetune_operator.conditions import condition_is_true, get_condition, set_condition
from kubetune_operator.kueue.gate import QueueGate
from kubetune_operator.model import (
    Cond,
    JobView,
    Phase,
    PodView,
    Reason,
    is_terminal,
    worker_pod_name,
)
from kubetune_operator.template_check import template_problem

# The worker refreshes its progress file at least every 30 s, even inside a
# long step; four missed beats means its pod runs but nobody knows if it works.
HEARTBEAT_STALE_S = 120.0


@dataclass
class Decision:
    status: dict[str, Any]
    create_pod: str | None = None  # name of the pod to create (already recorded in status)
    delete_pods: list[str] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def rfc3339(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def cap_result(result: dict[str, Any]) -> dict[str, Any]:
    """Scalars only and bounded, so status stays small whatever a trainable reports."""
    capped: dict[str, Any] = {}
    for key, value in result.items():
        if len(capped) >= MAX_RESULT_KEYS:
            break
        if isinstance(value, bool) or value is None or isinstance(value, int | float):
            if isinstance(value, float) and not math.isfinite(value):
                value = None  # NaN and the infinities are not JSON: the API refuses them
            elif not isinstance(value, bool) and isinstance(value, int) and abs(value) >= 2**63:
                value = None  # beyond int64, what the API stores
            capped[str(key)[:MAX_STRING]] = value
        elif isinstance(value, str):
            capped[str(key)[:MAX_STRING]] = value[:MAX_STRING]
    return capped


def shipped_code_error(job: JobView) -> str:
    """Unpickling runs code: the operator starts no worker for shipped code that
    is not in the job's own run folder (the worker checks it again)."""
    code = job.spec.get("code")
    if not code:
        return ""
    uri = str(code.get("uri") or "")
    if is_within_run(job.run_uri, uri):
        return ""
    return (
        f"spec.code.uri {uri} is outside the job's run folder: shipped code must be at "
        f"{job.run_uri}/.kubetune/code/<sha256>.pkl (kubetune.submit puts it there); "
        "nothing is unpickled from anywhere else"
    )


def needs_restore_check(job: JobView, progress: Progress | None) -> bool:
    """restoreFrom is checked once, before the first pod starts, unless the job
    already has checkpoints of its own (then the worker resumes from those)."""
    return bool(
        job.spec.get("restoreFrom")
        and not job.status.get("restoredFrom")
        and not job.status.get("workerPod")
        and not (progress and progress.latest_checkpoint)
        and not is_terminal(job.status.get("phase"))
    )


class _Builder:
    """Accumulates one reconcile's status changes, conditions and events."""

    def __init__(self, job: JobView, now: datetime):
        self.job = job
        self.now = rfc3339(now)
        self.st: dict[str, Any] = copy.deepcopy(job.status)
        self.decision = Decision(status=self.st)
        st = self.st
        st.setdefault("failures", 0)
        st.setdefault("preemptions", 0)
        st.setdefault("attempt", 0)
        if not st.get("conditions"):
            st["conditions"] = []
            self.cond(Cond.RUNNING, "Unknown", Reason.INITIALIZING, "the job was just created")
            self.cond(Cond.SUSPENDED, "False", Reason.NOT_SUSPENDED, "")
            self.cond(Cond.CHECKPOINTED, "False", Reason.NO_CHECKPOINT, "no checkpoint yet")
            for ctype in (Cond.COMPLETE, Cond.FAILED, Cond.FINISHED):
                self.cond(ctype, "False", Reason.NOT_FINISHED, "")
        st["observedGeneration"] = job.generation

    def cond(self, ctype: str, status: str, reason: str, message: str) -> None:
        self.st["conditions"] = set_condition(
            self.st["conditions"],
            ctype,
            status,
            reason,
            message,
            generation=self.job.generation,
            now=self.now,
        )

    def event(self, etype: str, reason: str, message: str) -> None:
        self.decision.events.append((etype, reason, message))

    def phase(self, phase: Phase, reason: str, message: str) -> None:
        changed = self.st.get("phase") != phase.value
        self.st["phase"] = phase.value
        running = phase is Phase.RUNNING
        self.cond(Cond.RUNNING, "True" if running else "False", reason, message)
        if phase is Phase.SUSPENDED:
            self.cond(Cond.SUSPENDED, "True", reason, message)
        elif not condition_is_true(self.st["conditions"], Cond.SUSPENDED) or phase in (
            Phase.PENDING,
            Phase.RUNNING,
            Phase.RESTARTING,
        ):
            self.cond(Cond.SUSPENDED, "False", Reason.NOT_SUSPENDED, "")
        if changed:
            warning = phase in (Phase.FAILED, Phase.RESTARTING)
            self.event("Warning" if warning else "Normal", reason, message)

    def finish(self, succeeded: bool, reason: str, message: str) -> None:
        self.phase(Phase.SUCCEEDED if succeeded else Phase.FAILED, reason, message)
        self.cond(Cond.COMPLETE if succeeded else Cond.FAILED, "True", reason, message)
        self.cond(Cond.FINISHED, "True", Reason.SUCCEEDED if succeeded else Reason.FAILED, message)
        self.st.setdefault("completionTime", self.now)

    def next_attempt(self) -> None:
        self.st["attempt"] = int(self.st.get("attempt") or 0) + 1
        self.st["workerPod"] = worker_pod_name(self.job.name, self.st["attempt"])
        self.st.pop("workerPodUID", None)
        self.st.pop("stoppingPod", None)


def _apply_progress(b: _Builder, progress: Progress | None) -> None:
    if progress is None or (progress.run_id and progress.run_id != b.job.uid):
        return  # another run's file: never mix it into this job's status
    progress, _ = progress.within(b.job.run_uri)  # storageio logs what it drops
    st = b.st
    st["iteration"] = progress.iteration
    if progress.last_result:
        st["lastResult"] = cap_result(progress.last_result)
    if progress.latest_checkpoint:
        before = (st.get("latestCheckpoint") or {}).get("path")
        st["latestCheckpoint"] = progress.latest_checkpoint
        latest = progress.latest_checkpoint
        message = f"{latest.get('path')} (iteration {latest.get('iteration')})"
        b.cond(Cond.CHECKPOINTED, "True", Reason.CHECKPOINT_COMMITTED, message)
        if before != latest.get("path"):
            b.event("Normal", Reason.CHECKPOINT_COMMITTED, message)
    if progress.best_checkpoint:
        st["bestCheckpoint"] = progress.best_checkpoint
    if progress.checkpoints:
        st["checkpoints"] = progress.checkpoints[-MAX_CHECKPOINTS:]


def _describe_exit(pod: PodView) -> str:
    text = f"worker pod {pod.name} exited with code {pod.exit_code}"
    if pod.exit_reason and pod.exit_reason not in ("Error", "Completed"):
        text += f" ({pod.exit_reason})"
    if pod.exit_message:
        text += f": {pod.exit_message.splitlines()[-1][:512]}"
    return text


def _silent_for(progress: Progress | None, now: datetime, uid: str) -> float | None:
    if progress is None or progress.updated is None or progress.state != "running":
        return None
    if progress.run_id and progress.run_id != uid:
        return None
    return now.timestamp() - progress.updated


def _deadline_passed(job: JobView, st: dict[str, Any], now: datetime) -> bool:
    seconds = job.spec.get("activeDeadlineSeconds")
    started = parse_rfc3339(st.get("startTime"))
    return bool(seconds and started and (now - started).total_seconds() > float(seconds))


def compute_decision(
    job: JobView,
    pods: list[PodView],
    progress: Progress | None,
    now: datetime,
    restore_error: str | None = None,
    gate: QueueGate | None = None,
) -> Decision:
    """`gate` is Kueue's word on a queued job (None: the job is not queued)."""
    b = _Builder(job, now)
    st, d = b.st, b.decision
    _apply_progress(b, progress)

    current = next((p for p in pods if p.name and p.name == st.get("workerPod")), None)
    others = [p for p in pods if p is not current]
    # Older attempts' pods go; the next pod waits until they are gone.
    d.delete_pods.extend(p.name for p in others if not p.deleting)

    if is_terminal(st.get("phase")):
        if current is not None and not current.finished and not current.deleting:
            d.delete_pods.append(current.name)  # a finished job leaves no running pod
        return d
    if gate is not None:
        _apply_gate(b, gate)

    if restore_error:
        b.finish(False, Reason.INVALID_CHECKPOINT, restore_error)
        return d

    code_error = shipped_code_error(job) or template_problem(job.spec.get("template"))
    if code_error:
        if current is not None and not current.finished and not current.deleting:
            d.delete_pods.append(current.name)
        b.finish(False, Reason.INVALID_SPEC, code_error)
        return d

    if _deadline_passed(job, st, now) and not job.suspend:
        if current is not None and not current.finished and not current.deleting:
            d.delete_pods.append(current.name)  # SIGTERM: the worker still saves a checkpoint
        seconds = job.spec.get("activeDeadlineSeconds")
        b.finish(False, Reason.DEADLINE, f"the job ran longer than activeDeadlineSeconds={seconds}")
        return d

    if current is not None:
        # A pod merely waiting for a node changes nothing worth a status write;
        # its uid is recorded once it has run (or is being stopped), which is
        # what telling a lost pod from one not made yet needs.
        if current.phase != "Pending" or current.deleting or st.get("workerPodUID"):
            st["workerPodUID"] = current.uid
        if current.finished:
            _on_pod_finished(b, current, gate)
            return d
        if gate is not None and not gate.may_run and not job.suspend:
            _evict(b, current, gate)
            return d

    if job.suspend:
        _suspend(b, current, others)
        return d

    if st.get("phase") == Phase.SUSPENDED.value:
        b.event("Normal", Reason.RESUMED, "spec.suspend is false: resuming from its checkpoint")
        st.pop("startTime", None)  # like a batch Job, the active deadline restarts on resume
        st["workerPod"] = ""

    if not st.get("workerPod"):
        b.next_attempt()
    if current is None:
        if st.get("workerPodUID"):
            # The pod we had seen is gone without us seeing it end. Unless we
            # stopped it ourselves (a suspend undone before it ended), it was
            # deleted from outside (eviction, node loss): a preemption, not a failure.
            if st.get("stoppingPod") != st["workerPod"]:
                st["preemptions"] += 1
                b.event("Warning", Reason.PREEMPTED, f"worker pod {st['workerPod']} disappeared")
            b.next_attempt()
            st["phase"] = Phase.RESTARTING.value
        restarting = st.get("phase") == Phase.RESTARTING.value
        if others:
            b.phase(
                Phase.RESTARTING if restarting else Phase.PENDING,
                Reason.RESTARTING if restarting else Reason.STARTING,
                "waiting for the previous worker pod to go",
            )
            return d
        if gate is not None and not gate.may_run:
            b.phase(Phase.PENDING, Reason.QUEUED, f"waiting for Kueue: {gate.waiting()[1]}")
            return d
        d.create_pod = st["workerPod"]
        st.setdefault("startTime", b.now)
        if job.spec.get("restoreFrom") and not st.get("restoredFrom"):
            st["restoredFrom"] = job.spec["restoreFrom"]
        b.phase(
            Phase.RESTARTING if restarting else Phase.PENDING,
            Reason.RESTARTING if restarting else Reason.STARTING,
            f"starting worker pod {st['workerPod']}",
        )
        return d

    if current.deleting:
        b.phase(Phase.RESTARTING, Reason.PREEMPTED, f"worker pod {current.name} is being deleted")
    elif current.phase == "Running":
        b.phase(Phase.RUNNING, Reason.RUNNING, f"worker pod {current.name} is running")
        silent = _silent_for(progress, now, job.uid)
        if silent is not None and silent > HEARTBEAT_STALE_S:
            b.cond(
                Cond.RUNNING,
                "Unknown",
                Reason.HEARTBEAT_STALE,
                f"worker pod {current.name} runs but has reported nothing for {silent:.0f}s",
            )
    elif current.unschedulable_message:
        b.phase(Phase.PENDING, Reason.UNSCHEDULABLE, current.unschedulable_message)
    elif current.waiting_reason:
        _cannot_start(b, current)
    else:
        b.phase(Phase.PENDING, Reason.STARTING, f"starting worker pod {current.name}")
    return d


def _cannot_start(b: _Builder, pod: PodView) -> None:
    """The worker container waits on something outside the pod (a missing Secret
    or ConfigMap, an image that does not pull): the job stays Pending and says
    so, in the kubelet's reason, with an event whenever that reason or its
    message changes. It never fails for it: a Secret created later heals it."""
    before = get_condition(b.st["conditions"], Cond.RUNNING) or {}
    detail = f": {pod.waiting_message}" if pod.waiting_message else ""
    message = (
        f"worker pod {pod.name} cannot start ({pod.waiting_reason}{detail}); "
        "it starts once that is fixed"
    )
    b.st["phase"] = Phase.PENDING.value  # the Warning below is this change's one event
    b.phase(Phase.PENDING, pod.waiting_reason, message)
    if (before.get("reason"), before.get("message")) != (pod.waiting_reason, message[:1024]):
        b.event("Warning", pod.waiting_reason, message)


def refuse_pod_decision(job: JobView, message: str, now: datetime) -> Decision:
    """The API refused the worker pod built from this spec (e.g. a bad template):
    hopeless until the spec changes, so the job fails with the API's reason."""
    b = _Builder(job, now)
    b.finish(False, Reason.INVALID_SPEC, f"the worker pod was refused: {message}")
    return b.decision


def _suspend(b: _Builder, current: PodView | None, others: list[PodView]) -> None:
    st, d = b.st, b.decision
    if current is not None:
        if not current.deleting:
            d.delete_pods.append(current.name)  # SIGTERM: checkpoint, then exit
            st["stoppingPod"] = current.name
        b.phase(Phase.SUSPENDING, Reason.SUSPENDING, "waiting for the worker to save a checkpoint")
        return
    if others:
        b.phase(Phase.SUSPENDING, Reason.SUSPENDING, "waiting for the worker pod to go")
        return
    st["workerPod"] = ""
    st.pop("workerPodUID", None)
    st.pop("stoppingPod", None)
    latest = st.get("latestCheckpoint") or {}
    where = f" at {latest['path']}" if latest.get("path") else " (no checkpoint was saved yet)"
    b.phase(Phase.SUSPENDED, Reason.SUSPENDED, f"suspended{where}")


def _apply_gate(b: _Builder, gate: QueueGate) -> None:
    """The Admitted condition, in Kueue's words; an event whenever they change."""
    before = get_condition(b.st["conditions"], Cond.ADMITTED) or {}
    if gate.may_run:
        reason, message, status = Reason.ADMITTED, gate.admitted_message(), "True"
    else:
        (reason, message), status = gate.waiting(), "False"
    b.cond(Cond.ADMITTED, status, reason, message)
    if (before.get("reason"), before.get("message")) != (reason, message[:1024]):
        warning = reason in ("Inadmissible", "WorkloadNotCreated")
        b.event("Warning" if warning else "Normal", reason, message)


def _evict(b: _Builder, current: PodView, gate: QueueGate) -> None:
    """Kueue takes the quota back: the worker checkpoints and stops (SIGTERM), and
    the quota is released only once its pod is gone (kueue.plan_workload)."""
    st, d = b.st, b.decision
    why = gate.waiting()[1]
    if not current.deleting:
        d.delete_pods.append(current.name)
    if st.get("stoppingPod") != current.name:
        st["stoppingPod"] = current.name
        st["preemptions"] += 1
        b.event("Warning", Reason.PREEMPTED, f"stopping worker pod {current.name}: {why}")
    b.phase(
        Phase.RESTARTING,
        Reason.PREEMPTED,
        f"{why}; the worker saves a checkpoint and stops, then the job waits in its queue",
    )


def _on_pod_finished(b: _Builder, pod: PodView, gate: QueueGate | None = None) -> None:
    st, d, job = b.st, b.decision, b.job
    code = pod.exit_code
    if pod.phase == "Succeeded" or code == 0:
        b.finish(True, Reason.SUCCEEDED, "the trainable reached its stop criterion")
        return
    # A storage error after the worker has already reported is an outage, not a
    # wrong bucket or credentials: it is retried like any failure.
    started = bool(st.get("iteration"))
    if code in HOPELESS_EXIT_CODES and not (code == EXIT_STORAGE and started):
        reason = EXIT_REASONS.get(code or 0, Reason.FAILED)
        b.finish(False, reason, pod.exit_message or _describe_exit(pod))
        return
    stopped = code == EXIT_STOPPED or pod.disrupted or pod.deleting
    if job.suspend and stopped:
        # Our own SIGTERM for a suspend: the pod is on its way out.
        if not pod.deleting:
            d.delete_pods.append(pod.name)
        b.phase(Phase.SUSPENDING, Reason.SUSPENDING, "the worker saved its checkpoint and stopped")
        return
    reason, message = Reason.RESTARTING, _describe_exit(pod)
    evicted = gate is not None and not gate.may_run
    if stopped and pod.name == st.get("stoppingPod") and evicted:
        # Counted when the eviction was acted on.
        reason, message = Reason.PREEMPTED, "the worker saved its checkpoint and stopped for Kueue"
    elif stopped and pod.name == st.get("stoppingPod"):
        message = (
            "the worker stopped for a suspend that was undone"  # neither failure nor preemption
        )
    elif stopped:
        st["preemptions"] += 1
        why = pod.disruption_message or "stopped from outside the operator"
        reason, message = Reason.PREEMPTED, f"worker pod {pod.name} was preempted: {why}"
    else:
        st["failures"] += 1
        limit = job.max_failures
        if limit >= 0 and st["failures"] > limit:
            b.finish(
                False,
                Reason.MAX_FAILURES,
                f"{message}; failed {st['failures']} times (maxFailures={limit})",
            )
            return
    if not pod.deleting:
        d.delete_pods.append(pod.name)
    if job.suspend:
        st["workerPod"] = ""
        b.phase(Phase.SUSPENDING, Reason.SUSPENDING, "waiting for the worker pod to go")
        return
    b.next_attempt()
    latest = (st.get("latestCheckpoint") or {}).get("path")
    if gate is not None and not gate.may_run:
        b.phase(Phase.PENDING, Reason.QUEUED, f"{message}; waiting for Kueue: {gate.waiting()[1]}")
        return
    resume = f"restarting from {latest}" if latest else "restarting from the beginning"
    # A phase that stays Restarting still gets its event: each attempt is news.
    if st.get("phase") == Phase.RESTARTING.value:
        b.event("Warning", reason, f"{message}; {resume}")
    b.phase(Phase.RESTARTING, reason, f"{message}; {resume}")
