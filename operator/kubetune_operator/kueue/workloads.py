"""The I/O half of the Kueue integration (gate.py is the pure half): reads what
Kueue says about a queued job for the state machine, and writes what the job
owes its Workload after each reconcile, guarded by the Workload's
resourceVersion; each write's result goes into the cache at once, so the next
reconcile never decides from the Workload it just replaced.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Any

from kubetune_operator import kube, kueue
from kubetune_operator.cache import ClusterCache
from kubetune_operator.kueue.gate import (
    PRIORITY_LABEL,
    WORKLOAD_ANNOTATION,
    QueueGate,
    WorkloadView,
    apply_flavors,
    build_workload,
    cleared_status,
    finished_status,
    plan_workload,
    priority_class,
    queue_name,
    spec_hash,
)
from kubetune_operator.model import Cond, JobView, Phase, PodView, is_terminal
from kubetune_operator.podspec import PodSettings, build_worker_pod
from kubetune_operator.workqueue import WriteBudget

log = logging.getLogger("kubetune_operator")

# Where the API serves Kueue's objects (group, version, plural).
WORKLOADS = (kueue.GROUP, kueue.VERSION, kueue.WORKLOADS)
FLAVORS = (kueue.GROUP, kueue.VERSION, kueue.RESOURCE_FLAVORS)
PRIORITY_CLASSES = (kueue.GROUP, kueue.VERSION, kueue.PRIORITY_CLASSES)
# An unknown priority class is looked up again this often.
PROBLEM_RETRY_S = 30.0


class WorkloadSync:
    def __init__(self, pod: PodSettings, cache: ClusterCache, budget: WriteBudget) -> None:
        self.pod = pod
        self.cache = cache
        self.budget = budget
        self._lock = threading.Lock()
        # Why a queued job's Workload could not be made (by job uid), until it can.
        self._problems: dict[str, str] = {}

    def gate(self, job: JobView, workload: dict[str, Any] | None) -> QueueGate | None:
        """Kueue's word on the job for the state machine; None: not queued."""
        queue = queue_name(job)
        if not queue:
            return None
        view = WorkloadView.from_body(workload) if workload is not None else None
        with self._lock:
            problem = self._problems.get(job.uid, "")
        return QueueGate(queue, view, problem)

    def forget(self, job_uid: str) -> None:
        with self._lock:
            self._problems.pop(job_uid, None)

    def place(self, pod: dict[str, Any], gate: QueueGate) -> dict[str, Any]:
        """The worker pod on the flavors Kueue assigned (a GET per flavor: once per
        pod start). ValueError when the template contradicts a flavor."""
        wl = gate.workload
        if wl is None:
            return pod
        flavors = [
            found
            for name in sorted(set(wl.flavors.values()))
            if (found := kube.get_cluster_object(name, *FLAVORS)) is not None
        ]
        pod = apply_flavors(pod, flavors, wl.pod_set_updates)
        pod["metadata"].setdefault("annotations", {})[WORKLOAD_ANNOTATION] = wl.name
        return pod

    def sync(
        self,
        job: JobView,
        workload: dict[str, Any] | None,
        pods: list[PodView],
        st: dict[str, Any],
    ) -> float | None:
        """Make the job's Workload say what the job did (`st`: the status the
        state machine decided, written first); the seconds after which to look
        again, if any."""
        terminal = None
        if is_terminal(st.get("phase")):
            finished: dict[str, Any] = next(
                (c for c in st.get("conditions") or [] if c.get("type") == Cond.FINISHED), {}
            )
            terminal = (st.get("phase") == Phase.SUCCEEDED.value, finished.get("message") or "")
        view = WorkloadView.from_body(workload) if workload is not None else None
        # The pod set matters only while the Workload holds no quota (it is then
        # made again if it changed): a running job's reconciles skip building it.
        desired_hash = ""
        if view is not None and not view.quota_reserved and not view.finished:
            desired_hash = spec_hash(self._desired(job, None)["spec"])
        plan = plan_workload(job, view, desired_hash, pods, terminal)
        if plan.empty:
            return None
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        ns = job.namespace
        self.budget.take()
        try:
            if plan.create:
                return self._create(job)
            assert workload is not None and view is not None
            if plan.delete:
                log.info("[%s/%s] deleting Workload %s (its spec changed)", ns, job.name, view.name)
                kube.delete_object(ns, view.name, view.uid, *WORKLOADS)
            if plan.set_active is not None:
                self.cache.put_workload(
                    kube.patch_object(workload, {"spec": {"active": plan.set_active}}, *WORKLOADS)
                )
            if plan.clear_eviction:
                if kube.job_has_pods(ns, job.uid):
                    return 1.0  # the cache is behind: quota goes back only after the pod
                status = cleared_status(workload, now)
                self.cache.put_workload(kube.replace_status(workload, status, *WORKLOADS))
                log.info("[%s/%s] worker gone: quota of %s given back", ns, job.name, view.name)
            if plan.finish is not None:
                succeeded, message = plan.finish
                status = finished_status(workload, succeeded, message, now)
                self.cache.put_workload(kube.replace_status(workload, status, *WORKLOADS))
        except kube.Conflict as exc:
            log.info("[%s/%s] Workload not written, deciding again: %s", ns, job.name, exc)
            return 0.5  # the watch brings the new Workload
        return None

    def _desired(self, job: JobView, priority: int | None) -> dict[str, Any]:
        return build_workload(job, build_worker_pod(job, 1, self.pod), priority)

    def _create(self, job: JobView) -> float | None:
        priority = None
        name = priority_class(job)
        if name:
            found = kube.get_cluster_object(name, *PRIORITY_CLASSES)
            if found is None:
                return self._problem(
                    job,
                    f"WorkloadPriorityClass {name!r} does not exist: create it, or fix "
                    f"the label {PRIORITY_LABEL}",
                )
            priority = int(found.get("value") or 0)
        try:
            kube.create_object(self._desired(job, priority), *WORKLOADS)
        except kube.Rejected as exc:
            return self._problem(job, f"the Workload was refused: {exc}")
        with self._lock:
            had_problem = self._problems.pop(job.uid, None) is not None
        return 0.0 if had_problem else None  # the job's status still shows the problem

    def _problem(self, job: JobView, problem: str) -> float:
        """Shown in the job's status by the next reconcile; tried again later."""
        with self._lock:
            new = self._problems.get(job.uid) != problem
            self._problems[job.uid] = problem
        if new:
            log.warning("[%s/%s] %s", job.namespace, job.name, problem)
        return 0.0 if new else PROBLEM_RETRY_S
