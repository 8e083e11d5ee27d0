"""Kueue's contract for a custom job API, for TrainableJobs (the pure half;
workloads.py does the I/O): what the Workload of a queued job is, what
Kueue's answer on it means (the state machine's gate), and which Workload
writes the operator owes Kueue (create, (de)activate, clear an eviction, finish).

kubetune is its own Kueue integration, as Kueue's jobframework is for batch
Jobs: one Workload per queued job, owned by it; the worker pod starts only
once the Workload is admitted, with the assigned flavors' node labels and
tolerations; an eviction stops the worker the lossless way (SIGTERM,
checkpoint, pod gone) and only then gives the quota back. docs/design.md
says why this path and not the plain-pod integration.

Pure: plain dicts in, plain dicts out.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from kubetune_contract import API_GROUP, LABEL_JOB, LABEL_JOB_UID
from kubetune_operator.conditions import condition_is_true, get_condition, set_condition
from kubetune_operator.kueue import GROUP, VERSION
from kubetune_operator.model import JobView, PodView

QUEUE_LABEL = f"{GROUP}/queue-name"
PRIORITY_LABEL = f"{GROUP}/priority-class"
# The Workload's pod set spec (and queue, priority) it was built from: a job
# whose pod set changed while it waits gets a new Workload.
SPEC_HASH_ANNOTATION = f"{API_GROUP}/workload-spec-hash"
POD_SET = "main"
# On a worker pod: the Workload whose admission it runs under.
WORKLOAD_ANNOTATION = f"{API_GROUP}/workload"

# Kueue's condition types and the eviction reasons after which its own
# integrations mark a Workload Requeued=True (the rest requeue otherwise).
ADMITTED = "Admitted"
QUOTA_RESERVED = "QuotaReserved"
EVICTED = "Evicted"
FINISHED = "Finished"
REQUEUED = "Requeued"
REQUEUE_REASONS = frozenset({"Preempted", "NodeFailures"})
DEACTIVATED = "Deactivated"


def queue_name(job: JobView) -> str:
    """The LocalQueue a job asks for; empty: the job is not queued."""
    return str(job.labels.get(QUEUE_LABEL) or "")


def priority_class(job: JobView) -> str:
    return str(job.labels.get(PRIORITY_LABEL) or "")


def workload_name(job: JobView) -> str:
    """Deterministic, so a restarted operator finds (never duplicates) it."""
    return f"trainablejob-{job.name[:220]}-{job.uid[:8]}"


@dataclass(frozen=True)
class WorkloadView:
    """What the operator reads from a job's Workload."""

    name: str
    uid: str
    active: bool
    spec_hash: str
    deleting: bool
    quota_reserved: bool
    admitted: bool
    finished: bool
    evicted_reason: str = ""  # non-empty while Evicted=True
    evicted_message: str = ""
    waiting_reason: str = ""  # QuotaReserved=False: Kueue's reason and words
    waiting_message: str = ""
    cluster_queue: str = ""
    flavors: dict[str, str] = field(default_factory=dict)  # resource -> ResourceFlavor
    pod_set_updates: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> WorkloadView:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        conds = status.get("conditions") or []
        evicted = get_condition(conds, EVICTED) if condition_is_true(conds, EVICTED) else None
        reserved = get_condition(conds, QUOTA_RESERVED) or {}
        admission = status.get("admission") or {}
        assignment: dict[str, Any] = next(
            (a for a in admission.get("podSetAssignments") or [] if a.get("name") == POD_SET),
            {},
        )
        updates = tuple(
            u
            for check in status.get("admissionChecks") or []
            for u in check.get("podSetUpdates") or []
            if u.get("name") == POD_SET
        )
        return cls(
            name=meta.get("name") or "",
            uid=meta.get("uid") or "",
            active=spec.get("active") is not False,
            spec_hash=(meta.get("annotations") or {}).get(SPEC_HASH_ANNOTATION) or "",
            deleting=bool(meta.get("deletionTimestamp")),
            quota_reserved=reserved.get("status") == "True",
            admitted=condition_is_true(conds, ADMITTED),
            finished=condition_is_true(conds, FINISHED),
            evicted_reason=(evicted or {}).get("reason") or "",
            evicted_message=(evicted or {}).get("message") or "",
            waiting_reason=reserved.get("reason") or ""
            if reserved.get("status") == "False"
            else "",
            waiting_message=reserved.get("message") or ""
            if reserved.get("status") == "False"
            else "",
            cluster_queue=admission.get("clusterQueue") or "",
            flavors=dict(assignment.get("flavors") or {}),
            pod_set_updates=updates,
        )

    @property
    def evicted(self) -> bool:
        return bool(self.evicted_reason)

    @property
    def may_run(self) -> bool:
        """Kueue lets the worker run: admitted, and not being evicted."""
        return self.active and self.admitted and not self.evicted and not self.finished


@dataclass(frozen=True)
class QueueGate:
    """What Kueue says about a queued job; the state machine's only view of it."""

    queue: str
    workload: WorkloadView | None
    problem: str = ""  # why the Workload cannot be made (e.g. an unknown priority class)

    @property
    def may_run(self) -> bool:
        return self.workload is not None and self.workload.may_run

    def waiting(self) -> tuple[str, str]:
        """(reason, message) of a job that may not run, in Kueue's words."""
        wl = self.workload
        if self.problem:
            return "WorkloadNotCreated", self.problem
        if wl is None:
            return "WorkloadCreating", f"creating its Workload in LocalQueue {self.queue}"
        if not wl.active:
            return "Inactive", f"Workload {wl.name} is inactive (the job is suspended)"
        if wl.evicted:
            return (
                "Evicted",
                f"Workload {wl.name} was evicted ({wl.evicted_reason}): {wl.evicted_message}",
            )
        if wl.waiting_message:
            return wl.waiting_reason or "Pending", wl.waiting_message
        if wl.quota_reserved:
            return (
                "QuotaReserved",
                f"Workload {wl.name} has quota; waiting for its admission checks",
            )
        return "Pending", f"Workload {wl.name} waits in LocalQueue {self.queue}"

    def admitted_message(self) -> str:
        wl = self.workload
        assert wl is not None
        flavors = ", ".join(sorted(set(wl.flavors.values()))) or "none"
        return f"admitted by ClusterQueue {wl.cluster_queue} (flavors: {flavors})"


# The Workload the operator writes.


def _pod_set_template(pod: dict[str, Any]) -> dict[str, Any]:
    """The worker pod as Kueue's pod set template. Requests default to limits,
    as the API server does for a pod, so Kueue counts what the pod will ask for."""
    spec = copy.deepcopy(pod["spec"])
    for container in spec.get("containers") or []:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        if limits:
            requests = dict(resources.get("requests") or {})
            for name, value in limits.items():
                requests.setdefault(name, value)
            container["resources"] = {**resources, "requests": requests}
    meta = pod.get("metadata") or {}
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != "kubetune.io/attempt"}
    return {
        "metadata": {"labels": labels, "annotations": meta.get("annotations") or {}},
        "spec": spec,
    }


def desired_spec(job: JobView, pod: dict[str, Any], priority: int | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "queueName": queue_name(job),
        "active": not job.suspend,
        "podSets": [{"name": POD_SET, "count": 1, "template": _pod_set_template(pod)}],
    }
    name = priority_class(job)
    if name:
        spec["priorityClassRef"] = {"group": GROUP, "kind": "WorkloadPriorityClass", "name": name}
        spec["priority"] = int(priority or 0)
    return spec


def spec_hash(spec: dict[str, Any]) -> str:
    """Of what may not change under an admission: everything but `active` (and
    the priority value, which follows its class)."""
    fixed = {k: v for k, v in spec.items() if k not in ("active", "priority")}
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:16]


def build_workload(job: JobView, pod: dict[str, Any], priority: int | None) -> dict[str, Any]:
    spec = desired_spec(job, pod, priority)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workload",
        "metadata": {
            "name": workload_name(job),
            "namespace": job.namespace,
            "labels": {LABEL_JOB: job.name, LABEL_JOB_UID: job.uid},
            "annotations": {SPEC_HASH_ANNOTATION: spec_hash(spec)},
            "ownerReferences": [
                {
                    "apiVersion": f"{API_GROUP}/v1alpha1",
                    "kind": "TrainableJob",
                    "name": job.name,
                    "uid": job.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def cleared_status(body: dict[str, Any], now: str) -> dict[str, Any]:
    """The Workload's status once its evicted worker is gone, as Kueue's own
    integrations write it: quota and admission given back, and Requeued=True
    after a preemption or node failure (Kueue requeues the rest itself)."""
    status = copy.deepcopy(body.get("status") or {})
    gen = int((body.get("metadata") or {}).get("generation") or 0)
    conds = status.get("conditions") or []
    evicted = get_condition(conds, EVICTED) or {}
    reason, message = evicted.get("reason") or "Pending", evicted.get("message") or ""
    requeued = "True" if reason in REQUEUE_REASONS else "False"
    conds = set_condition(conds, REQUEUED, requeued, reason, message, generation=gen, now=now)
    conds = set_condition(
        conds, QUOTA_RESERVED, "False", "Pending", message, generation=gen, now=now
    )
    if get_condition(conds, ADMITTED) is not None:
        no_quota = "The workload has no reservation"
        conds = set_condition(
            conds, ADMITTED, "False", "NoReservation", no_quota, generation=gen, now=now
        )
    status["conditions"] = conds
    status.pop("admission", None)
    return status


def finished_status(
    body: dict[str, Any], succeeded: bool, message: str, now: str
) -> dict[str, Any]:
    status = copy.deepcopy(body.get("status") or {})
    gen = int((body.get("metadata") or {}).get("generation") or 0)
    reason = "Succeeded" if succeeded else "Failed"
    status["conditions"] = set_condition(
        status.get("conditions") or [], FINISHED, "True", reason, message, generation=gen, now=now
    )
    return status


# What the operator owes Kueue for one job, decided after the job's own decision.


@dataclass(frozen=True)
class WorkloadPlan:
    create: bool = False
    delete: bool = False  # a pending Workload whose pod set changed, or an unqueued job's
    set_active: bool | None = None
    clear_eviction: bool = False  # only once the pods are confirmed gone
    finish: tuple[bool, str] | None = None  # (succeeded, message)

    @property
    def empty(self) -> bool:
        return self == WorkloadPlan()


def plan_workload(
    job: JobView,
    workload: WorkloadView | None,
    desired_hash: str,
    pods: list[PodView],
    terminal: tuple[bool, str] | None,
) -> WorkloadPlan:
    """`terminal` is (succeeded, message) once the job has ended."""
    queued = bool(queue_name(job))
    if workload is None:
        return WorkloadPlan(create=queued and terminal is None)
    if workload.deleting:
        return WorkloadPlan()
    if not queued:
        # The label was removed: the job is no longer Kueue's to hold back.
        return WorkloadPlan(delete=not workload.finished)
    if terminal is not None:
        running = any(not p.finished for p in pods)
        if workload.finished or running:
            return WorkloadPlan()
        return WorkloadPlan(finish=terminal)
    if workload.finished:
        return WorkloadPlan()
    if workload.spec_hash != desired_hash and not workload.quota_reserved:
        return WorkloadPlan(delete=True)
    active = not job.suspend
    set_active = active if workload.active != active else None
    clear = workload.evicted and workload.quota_reserved and not pods
    return WorkloadPlan(set_active=set_active, clear_eviction=clear)


def apply_flavors(
    pod: dict[str, Any], flavors: list[dict[str, Any]], updates: tuple[dict[str, Any], ...]
) -> dict[str, Any]:
    """The worker pod with the node labels and tolerations of the flavors Kueue
    assigned (and any admission check's pod set updates). A template's own
    nodeSelector that contradicts a flavor is an error: the pod could never
    land where its quota is."""
    pod = copy.deepcopy(pod)
    spec, meta = pod["spec"], pod["metadata"]
    selector = dict(spec.get("nodeSelector") or {})
    tolerations = list(spec.get("tolerations") or [])
    sources = [((f.get("metadata") or {}).get("name", "?"), f.get("spec") or {}) for f in flavors]
    sources += [("admission check", {"nodeLabels": u.get("nodeSelector"), **u}) for u in updates]
    for origin, fspec in sources:
        for key, value in (fspec.get("nodeLabels") or {}).items():
            if selector.get(key, value) != value:
                raise ValueError(
                    f"the template's nodeSelector {key}={selector[key]} contradicts "
                    f"{origin}'s node label {key}={value}"
                )
            selector[key] = value
        for toleration in fspec.get("tolerations") or []:
            if toleration not in tolerations:
                tolerations.append(toleration)
        meta["labels"] = {**(fspec.get("labels") or {}), **(meta.get("labels") or {})}
        meta["annotations"] = {
            **(fspec.get("annotations") or {}),
            **(meta.get("annotations") or {}),
        }
    if selector:
        spec["nodeSelector"] = selector
    if tolerations:
        spec["tolerations"] = tolerations
    return pod
