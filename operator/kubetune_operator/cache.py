"""What the operator remembers between watch events: each job's body (compact)
and the few facts it needs about each worker pod.

Filled only from the watches (and from the bodies our own writes return), so
a restarted operator rebuilds it from one listing; nothing here is the only
copy of anything. Bodies are kept as compact JSON without `managedFields`
and `kubectl`'s last-applied annotation: a job costs ~2-4 KB here, not the
~20 KB of a parsed body. Thread-safe: watch handlers write from the event
loop, reconcile threads read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import orjson

from kubetune_contract import LABEL_JOB, LABEL_JOB_UID, LABEL_SWEEP
from kubetune_operator.model import PodView

JobKey = tuple[str, str]  # (namespace, name)

_DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def job_key(body: dict[str, Any]) -> JobKey:
    meta = body.get("metadata") or {}
    return (meta.get("namespace") or "default", meta.get("name") or "")


def compact_body(body: dict[str, Any]) -> bytes:
    """The body without what the operator never reads, as JSON bytes."""
    meta = dict(body.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations and any(a in annotations for a in _DROPPED_ANNOTATIONS):
        meta["annotations"] = {
            k: v for k, v in annotations.items() if k not in _DROPPED_ANNOTATIONS
        }
    return orjson.dumps({**body, "metadata": meta})


def phase_of(body: dict[str, Any]) -> str:
    """The phase a job counts under: a job whose status the operator has not
    written yet counts as Pending, which is what that first write says."""
    return str((body.get("status") or {}).get("phase") or "Pending")


def _revision(body: dict[str, Any]) -> int | None:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


@dataclass(frozen=True)
class WorkerPod:
    """A worker pod as the cache keeps it: whose it is, and its PodView."""

    namespace: str
    job_name: str
    job_uid: str
    view: PodView

    @property
    def job_key(self) -> JobKey:
        return (self.namespace, self.job_name)


def worker_pod_from(body: dict[str, Any]) -> WorkerPod | None:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    if not labels.get(LABEL_JOB_UID) or not labels.get(LABEL_JOB):
        return None
    return WorkerPod(
        namespace=meta.get("namespace") or "default",
        job_name=labels[LABEL_JOB],
        job_uid=labels[LABEL_JOB_UID],
        view=PodView.from_pod(body),
    )


class ClusterCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[JobKey, bytes] = {}
        self._revisions: dict[JobKey, int] = {}
        self._uids: dict[JobKey, str] = {}
        # Jobs by (namespace, phase), kept as jobs change, so the metrics
        # endpoint reads them without a pass over every job.
        self._phases: dict[JobKey, str] = {}
        self._phase_counts: dict[tuple[str, str], int] = {}
        self._pods: dict[str, WorkerPod] = {}  # by pod uid
        self._pods_by_job: dict[str, set[str]] = {}  # job uid -> pod uids
        self._sweeps: dict[JobKey, bytes] = {}  # TrainableSweeps
        self._sweep_jobs: dict[JobKey, set[str]] = {}  # sweep key -> its trials' names
        self._workloads: dict[str, bytes] = {}  # job uid -> its Kueue Workload (--kueue)
        self._workload_revisions: dict[str, tuple[str, int]] = {}  # job uid -> (wl uid, rv)

    # jobs

    def put_job(self, body: dict[str, Any], *, from_watch: bool = False) -> JobKey:
        """Keep body. A watch event older than what our own write returned is
        skipped (resourceVersions are etcd revisions; an unparsable one is
        taken as newer): only an optimisation, since every write is guarded by
        the resourceVersion it was decided from."""
        key = job_key(body)
        data = compact_body(body)
        rv = _revision(body)
        uid = (body.get("metadata") or {}).get("uid") or ""
        with self._lock:
            if from_watch and rv is not None:
                old = self._revisions.get(key)
                if old is not None and rv < old:
                    return key
            self._jobs[key] = data
            self._uids[key] = uid
            self._count_phase(key, phase_of(body))
            sweep = ((body.get("metadata") or {}).get("labels") or {}).get(LABEL_SWEEP)
            if sweep:
                self._sweep_jobs.setdefault((key[0], sweep), set()).add(key[1])
            if rv is None:
                self._revisions.pop(key, None)
            else:
                self._revisions[key] = rv
        return key

    def forget_job(self, key: JobKey) -> None:
        with self._lock:
            for (ns, _), names in self._sweep_jobs.items():
                if ns == key[0]:
                    names.discard(key[1])
            self._jobs.pop(key, None)
            self._uids.pop(key, None)
            self._revisions.pop(key, None)
            self._count_phase(key, None)

    def job(self, key: JobKey) -> dict[str, Any] | None:
        with self._lock:
            data = self._jobs.get(key)
        return None if data is None else orjson.loads(data)

    def job_uid(self, key: JobKey) -> str | None:
        with self._lock:
            return self._uids.get(key)

    def job_keys(self) -> list[JobKey]:
        with self._lock:
            return list(self._jobs)

    def job_count(self) -> int:
        with self._lock:
            return len(self._jobs)

    def phase_counts(self) -> dict[tuple[str, str], int]:
        """Jobs by (namespace, phase); namespaces and phases with none left out."""
        with self._lock:
            return {k: n for k, n in self._phase_counts.items() if n}

    def _count_phase(self, key: JobKey, phase: str | None) -> None:
        """Move `key` to `phase` in the counts (None: the job is gone). Holds the lock."""
        old = self._phases.pop(key, None)
        if old is not None:
            self._phase_counts[(key[0], old)] -= 1
        if phase is not None:
            self._phases[key] = phase
            self._phase_counts[(key[0], phase)] = self._phase_counts.get((key[0], phase), 0) + 1

    # pods

    def put_pod(self, body: dict[str, Any]) -> WorkerPod | None:
        pod = worker_pod_from(body)
        if pod is None or not pod.view.uid:
            return None
        with self._lock:
            self._pods[pod.view.uid] = pod
            self._pods_by_job.setdefault(pod.job_uid, set()).add(pod.view.uid)
        return pod

    def forget_pod(self, body: dict[str, Any]) -> WorkerPod | None:
        pod = worker_pod_from(body)
        if pod is None:
            return None
        with self._lock:
            self._pods.pop(pod.view.uid, None)
            uids = self._pods_by_job.get(pod.job_uid)
            if uids is not None:
                uids.discard(pod.view.uid)
                if not uids:
                    del self._pods_by_job[pod.job_uid]
        return pod

    def pod(self, uid: str) -> WorkerPod | None:
        with self._lock:
            return self._pods.get(uid)

    def pods_of(self, job_uid: str) -> list[PodView]:
        with self._lock:
            uids = self._pods_by_job.get(job_uid) or ()
            return sorted((self._pods[u].view for u in uids), key=lambda p: p.name)

    def pod_count(self) -> int:
        with self._lock:
            return len(self._pods)

    # Kueue Workloads (labelled with their job's uid by the operator)

    def put_workload(self, body: dict[str, Any], *, from_watch: bool = False) -> JobKey | None:
        """Keep a Workload; the key of the job it belongs to (None: not ours). A
        watch event older than what our own write returned is skipped."""
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        uid, name = labels.get(LABEL_JOB_UID), labels.get(LABEL_JOB)
        if not uid or not name:
            return None
        rv = _revision(body)
        with self._lock:
            kept = self._workload_revisions.get(uid)
            same = kept is not None and kept[0] == meta.get("uid")
            if from_watch and rv is not None and kept is not None and same and rv < kept[1]:
                return (meta.get("namespace") or "default", name)
            self._workloads[uid] = compact_body(body)
            if rv is None:
                self._workload_revisions.pop(uid, None)
            else:
                self._workload_revisions[uid] = (meta.get("uid") or "", rv)
        return (meta.get("namespace") or "default", name)

    def forget_workload(self, body: dict[str, Any]) -> JobKey | None:
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        uid, name = labels.get(LABEL_JOB_UID), labels.get(LABEL_JOB)
        if not uid or not name:
            return None
        with self._lock:
            kept = self._workloads.get(uid)
            # Only the Workload that went: a recreated one may already be here.
            if kept is not None and orjson.loads(kept)["metadata"].get("uid") == meta.get("uid"):
                del self._workloads[uid]
                self._workload_revisions.pop(uid, None)
        return (meta.get("namespace") or "default", name)

    def workload_of(self, job_uid: str) -> dict[str, Any] | None:
        with self._lock:
            data = self._workloads.get(job_uid)
        return None if data is None else orjson.loads(data)

    # TrainableSweeps and their trials (TrainableJobs labelled with the sweep)

    def put_sweep(self, body: dict[str, Any]) -> JobKey:
        key = job_key(body)
        with self._lock:
            self._sweeps[key] = compact_body(body)
        return key

    def forget_sweep(self, key: JobKey) -> None:
        with self._lock:
            self._sweeps.pop(key, None)
            self._sweep_jobs.pop(key, None)

    def sweep(self, key: JobKey) -> dict[str, Any] | None:
        with self._lock:
            data = self._sweeps.get(key)
        return None if data is None else orjson.loads(data)

    def jobs_of_sweep(self, namespace: str, sweep: str) -> list[dict[str, Any]]:
        with self._lock:
            names = sorted(self._sweep_jobs.get((namespace, sweep)) or ())
            found = [self._jobs.get((namespace, n)) for n in names]
        return [orjson.loads(d) for d in found if d is not None]
