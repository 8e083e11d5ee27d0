"""The TrainableJob reconcile: the reconcile threads (workqueue.py) take job
keys from the work queue and make each job's world match its status, one
reconcile at a time per job.

A reconcile decides from the cache (filled by the watches), so a job whose
world did not change costs no API request: it is not even reconciled, except
by the slow resync. Status is written once per reconcile, only when it
changed, guarded by the resourceVersion the decision was made from; a
conflict re-reads the job and decides again. Pods are created and deleted
only after a successful status write, or after a fresh read has confirmed
that the cache was current, so a stale cache never acts.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kubetune_contract import Progress
from kubetune_operator import kube, storageio
from kubetune_operator.cache import ClusterCache, JobKey
from kubetune_operator.kueue.gate import QueueGate
from kubetune_operator.kueue.workloads import WorkloadSync
from kubetune_operator.metrics import (
    RECONCILE_RETRIES,
    RECONCILE_SECONDS,
    RECONCILES,
    REPORT_TO_STATUS_SECONDS,
    STATUS_WRITES,
    record_status_change,
)
from kubetune_operator.model import JobView, Phase, PodView, is_terminal
from kubetune_operator.podspec import PodSettings, build_worker_pod
from kubetune_operator.progressbook import ProgressBook, newer
from kubetune_operator.statemachine import (
    Decision,
    compute_decision,
    needs_restore_check,
    parse_rfc3339,
    refuse_pod_decision,
)
from kubetune_operator.workqueue import FairLine, ReconcileThreads, WorkQueue, WriteBudget

log = logging.getLogger("kubetune_operator")

# A Secret is read only when S3 must be (rarely); keep it briefly for bursts.
SECRET_TTL_S = 60.0


@dataclass
class ControllerSettings:
    pod: PodSettings = field(default_factory=PodSettings)
    workers: int = 16
    resync_s: float = 300.0
    # Progress-only status writes of one job are at least this far apart;
    # phase changes go out at once.
    progress_interval_s: float = 0.5
    status_writes_per_s: float = 150.0
    # Pod creations and deletions: bounded apart from status writes, so a burst
    # of new jobs never waits behind progress (nor progress behind them).
    pod_writes_per_s: float = 100.0
    # Queue jobs labelled kueue.x-k8s.io/queue-name through Kueue (--kueue).
    kueue: bool = False


def _count_reconcile(outcome: str, seconds: float) -> None:
    RECONCILES.labels(outcome).inc()
    if outcome == "error":  # retried with backoff
        RECONCILE_RETRIES.labels("error").inc()
    RECONCILE_SECONDS.observe(seconds)


class Controller:
    def __init__(self, settings: ControllerSettings, cache: ClusterCache | None = None) -> None:
        self.settings = settings
        self.cache = cache or ClusterCache()
        self.queue: WorkQueue[JobKey] = WorkQueue()
        self.book = ProgressBook()
        self.budget = WriteBudget(
            settings.status_writes_per_s, burst=max(1.0, settings.status_writes_per_s)
        )
        self.pod_budget = WriteBudget(
            settings.pod_writes_per_s, burst=max(1.0, settings.pod_writes_per_s)
        )
        self._last_progress_write: dict[JobKey, float] = {}
        self.progress_line: FairLine[JobKey] = FairLine()
        self._secrets: dict[tuple[str, str], tuple[float, dict[str, str] | None]] = {}
        self.workloads = WorkloadSync(settings.pod, self.cache, self.pod_budget)
        self.reconcilers = ReconcileThreads(
            self.queue, self.reconcile, name="kubetune-reconcile", counted=_count_reconcile
        )
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # running

    def start(self) -> None:
        self._threads.extend(self.reconcilers.start(self.settings.workers))
        for target, name in ((self._resync, "kubetune-resync"), (self._pace, "kubetune-pace")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self.queue.close()
        self.progress_line.close()

    def _resync(self) -> None:
        # The backstop for anything missed: a pass over the cache, which costs
        # no API request for a job whose decision does not change.
        while not self._stop.wait(self.settings.resync_s):
            for key in self.cache.job_keys():
                self.queue.add(key)

    # progress reports

    def progress_pushed(self, key: JobKey) -> None:
        """A new report for this job arrived: it joins the line for a progress
        write (once, however many reports it sends meanwhile)."""
        self.progress_line.join(key)

    def _pace(self) -> None:
        # Lets reporting jobs to their reconcile in turn, at the rate progress
        # writes may take of the budget; a job's writes stay at least
        # progress_interval_s apart.
        pause = 1.0 / (0.8 * self.settings.status_writes_per_s)
        while not self._stop.is_set():
            key = self.progress_line.next(timeout=1.0)
            if key is None:
                continue
            last = self._last_progress_write.get(key)
            wait = 0.0 if last is None else last + self.settings.progress_interval_s
            self.queue.add(key, wait - time.monotonic())
            self._stop.wait(pause)

    # one reconcile

    def reconcile(self, key: JobKey) -> float | None:
        """Make one job's world match its status; the seconds after which to look
        again (None: only when something changes)."""
        body = self.cache.job(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        job = JobView.from_body(body)
        phase = job.status.get("phase")
        pods = self.cache.pods_of(job.uid)
        worker = str(job.status.get("workerPod") or "")
        current = next((p for p in pods if p.name and p.name == worker), None)

        workload = self.cache.workload_of(job.uid) if self.settings.kueue else None
        gate = self.workloads.gate(job, workload) if self.settings.kueue else None
        progress, restore_error = None, None
        if not is_terminal(phase):
            progress = self._progress(job, worker, current)
            if needs_restore_check(job, progress):
                restore_error = storageio.check_restore_from(job, self.credentials(job))
        else:
            self._forget_progress(key, job.uid)

        now = datetime.now(timezone.utc)
        decision = compute_decision(job, pods, progress, now, restore_error, gate)
        acts = bool(decision.create_pod or decision.delete_pods)

        if decision.status != job.status:
            progress_only = not acts and decision.status.get("phase") == phase
            if progress_only and not self.budget.try_take(reserve=self.budget.burst / 5):
                self.progress_line.join(key)  # phase changes took the tokens: wait a turn
                return None
            if not progress_only:
                self.budget.take()
            try:
                written = kube.replace_status(body, decision.status)
            except kube.Conflict as exc:
                log.info("[%s/%s] status not written, deciding again: %s", *key, exc)
                RECONCILE_RETRIES.labels("conflict").inc()
                self._refresh(key)
                return 0.0
            STATUS_WRITES.inc()
            record_status_change(job.namespace, job.status, decision.status)
            self.cache.put_job(written)
            self._note_progress_written(key, job.uid)
            if decision.status.get("phase") != phase:
                log.info("[%s/%s] %s -> %s", *key, phase, decision.status.get("phase"))
        elif acts and not self._cache_is_current(key, body):
            return 0.0  # the cache was behind; decide again from the fresh read

        self._act(job, body, decision, now, gate)
        if current is None or current.phase != "Running":
            self._last_progress_write.pop(key, None)  # not reporting now
        look = self._next_look(job, decision, current)
        if self.settings.kueue and (workload is not None or gate is not None):
            again = self.workloads.sync(job, workload, pods, decision.status)
            if again is not None:
                look = again if look is None else min(look, again)
        return look

    def _act(
        self,
        job: JobView,
        body: dict[str, Any],
        decision: Decision,
        now: datetime,
        gate: QueueGate | None = None,
    ) -> None:
        for pod_name in decision.delete_pods:
            self.pod_budget.take()
            kube.delete_pod(job.namespace, pod_name)
        for etype, reason, message in decision.events:
            kube.post_event(body, etype, reason, message)
        if decision.create_pod:
            attempt = int(decision.status["attempt"])
            self.pod_budget.take()
            try:
                pod = build_worker_pod(job, attempt, self.settings.pod)
                if gate is not None:
                    pod = self.workloads.place(pod, gate)
                kube.create_pod(job.namespace, pod)
            except (kube.Rejected, ValueError) as exc:
                self._fail_refused(job, str(exc), now)

    def _next_look(self, job: JobView, decision: Decision, current: PodView | None) -> float | None:
        """Time-based checks (a silent worker, the active deadline) need a look
        even when nothing changes; everything else waits for an event."""
        st = decision.status
        if is_terminal(st.get("phase")):
            return None
        waits = []
        silent = self.book.next_check_in(job.uid, current)
        if silent is not None:
            waits.append(silent)
        seconds = job.spec.get("activeDeadlineSeconds")
        started = parse_rfc3339(st.get("startTime"))
        if seconds and started and not job.suspend:
            left = started.timestamp() + float(seconds) - time.time()
            waits.append(max(0.5, left + 0.5))
        return min(waits) if waits else None

    def _progress(self, job: JobView, worker: str, pod: PodView | None) -> Progress | None:
        if not worker and job.status.get("phase") != Phase.SUSPENDING.value:
            return None
        report = self.book.pushed(job.uid)
        pushed = None
        if report is not None:
            try:
                pushed = report.progress()
            except (ValueError, TypeError):
                pushed = None
        seen = bool(job.status.get("workerPodUID"))
        if not self.book.needs_file_read(job.uid, worker, pod, seen):
            return pushed
        stored = storageio.read_progress(job, self.credentials(job))
        self.book.mark_read(job.uid, worker, pod)
        return newer(pushed, stored)

    def _note_progress_written(self, key: JobKey, job_uid: str) -> None:
        report = self.book.pushed(job_uid)
        if report is None:
            return
        now = time.monotonic()
        if report.received > self._last_progress_write.get(key, float("-inf")):
            REPORT_TO_STATUS_SECONDS.observe(now - report.received)
        self._last_progress_write[key] = now

    def _forget_progress(self, key: JobKey, job_uid: str) -> None:
        self.book.forget(job_uid)
        self._last_progress_write.pop(key, None)

    def forget_job(self, key: JobKey, job_uid: str) -> None:
        self.cache.forget_job(key)
        self.workloads.forget(job_uid)
        self.queue.discard(key)
        self._forget_progress(key, job_uid)

    def credentials(self, job: JobView) -> dict[str, str] | None:
        name = (job.storage.get("secretRef") or {}).get("name")
        if not name:
            return None
        cached = self._secrets.get((job.namespace, name))
        if cached is not None and time.monotonic() - cached[0] < SECRET_TTL_S:
            return cached[1]
        creds = storageio.credentials_from_secret(kube.read_secret(job.namespace, name))
        self._secrets[(job.namespace, name)] = (time.monotonic(), creds)
        return creds

    def _refresh(self, key: JobKey) -> dict[str, Any] | None:
        fresh = kube.get_job(*key)
        if fresh is None:
            self.cache.forget_job(key)
        else:
            self.cache.put_job(fresh)
        return fresh

    def _cache_is_current(self, key: JobKey, body: dict[str, Any]) -> bool:
        fresh = self._refresh(key)
        rv = (fresh or {}).get("metadata", {}).get("resourceVersion")
        return fresh is not None and rv == body["metadata"].get("resourceVersion")

    def _fail_refused(self, job: JobView, message: str, now: datetime) -> None:
        body = self._refresh((job.namespace, job.name))
        if body is None:
            return
        decision = refuse_pod_decision(JobView.from_body(body), message, now)
        try:
            written = kube.replace_status(body, decision.status)
        except kube.Conflict:
            return  # the next reconcile builds the pod again and gets the same refusal
        STATUS_WRITES.inc()
        record_status_change(job.namespace, body.get("status") or {}, decision.status)
        self.cache.put_job(written)
        for etype, reason, text in decision.events:
            kube.post_event(body, etype, reason, text)
