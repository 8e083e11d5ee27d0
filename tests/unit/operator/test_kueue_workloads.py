"""The Workload I/O of a queued job against the cache and a fake of our
Kubernetes module: the Workload made (and a missing priority class shown,
then looked up again later), activity following suspend, quota given back
only once the worker is confirmed gone, a finished job's Workload finished,
a conflict looked at again, and the worker pod placed on the assigned flavors."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from operator_factories import job, pod

from kubetune_contract import LABEL_JOB, LABEL_JOB_UID
from kubetune_operator import kube
from kubetune_operator.cache import ClusterCache
from kubetune_operator.kueue.gate import PRIORITY_LABEL, QUEUE_LABEL, WORKLOAD_ANNOTATION
from kubetune_operator.kueue.workloads import PROBLEM_RETRY_S, WorkloadSync
from kubetune_operator.podspec import PodSettings, build_worker_pod
from kubetune_operator.workqueue import WriteBudget

KUEUE = ("kueue.x-k8s.io", "v1beta2")
WORKLOADS = (*KUEUE, "workloads")
QUEUED = {QUEUE_LABEL: "team-a"}


class FakeKube:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.cluster: dict[tuple[str, str], dict[str, Any]] = {}
        self.has_pods = False
        self.conflict = False

    def get_cluster_object(
        self, name: str, group: str, version: str, plural: str
    ) -> dict[str, Any] | None:
        assert (group, version) == KUEUE
        return copy.deepcopy(self.cluster.get((plural, name)))

    def create_object(self, body: dict[str, Any], *where: str) -> dict[str, Any] | None:
        self.calls.append(("create", (where, body)))
        return body

    def delete_object(self, namespace: str, name: str, uid: str, *where: str) -> None:
        self.calls.append(("delete", (where, name, uid)))

    def patch_object(self, body: dict[str, Any], changes: dict[str, Any], *where: str) -> Any:
        if self.conflict:
            raise kube.Conflict("changed")
        self.calls.append(("patch", (where, changes)))
        return {**body, "spec": {**body["spec"], **changes["spec"]}}

    def replace_status(self, body: dict[str, Any], status: dict[str, Any], *where: str) -> Any:
        self.calls.append(("status", (where, status)))
        return {**body, "status": status}

    def job_has_pods(self, namespace: str, job_uid: str) -> bool:
        self.calls.append(("list", job_uid))
        return self.has_pods

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> tuple[WorkloadSync, FakeKube]:
    fk = FakeKube()
    for name in (
        "get_cluster_object",
        "create_object",
        "delete_object",
        "patch_object",
        "replace_status",
        "job_has_pods",
    ):
        monkeypatch.setattr(kube, name, getattr(fk, name))
    sync = WorkloadSync(PodSettings(), ClusterCache(), WriteBudget(1000, 1000))
    return sync, fk


def queued(spec: dict[str, Any] | None = None, **labels: str) -> Any:
    return job(spec, labels={**QUEUED, **labels})


def workload(*conds: tuple[str, str, str], active: bool = True) -> dict[str, Any]:
    j = queued()
    return {
        "kind": "Workload",
        "metadata": {
            "name": "trainablejob-j-uid-1",
            "namespace": "ns",
            "uid": "wl-1",
            "generation": 1,
            "resourceVersion": "5",
            "labels": {LABEL_JOB: j.name, LABEL_JOB_UID: j.uid},
        },
        "spec": {"active": active},
        "status": {
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": ""} for t, s, r in conds
            ],
            "admission": {
                "clusterQueue": "cq",
                "podSetAssignments": [{"name": "main", "flavors": {"nvidia.com/gpu": "gpu"}}],
            },
        },
    }


RUNNING = {"phase": "Running", "conditions": []}
ADMITTED = (("QuotaReserved", "True", "R"), ("Admitted", "True", "R"))


def test_a_queued_job_gets_its_workload(world: Any) -> None:
    sync, fk = world
    assert sync.gate(job(), None) is None  # not queued: nothing to do with Kueue
    assert sync.sync(queued(), None, [], {"phase": "Pending"}) is None
    [(kind, (where, body))] = fk.calls
    assert (kind, where) == ("create", WORKLOADS)
    assert body["metadata"]["labels"][LABEL_JOB_UID] == "uid-1"
    assert body["spec"]["queueName"] == "team-a" and body["spec"]["active"] is True


def test_a_missing_priority_class_is_shown_then_looked_up_again_later(world: Any) -> None:
    sync, fk = world
    j = queued(**{PRIORITY_LABEL: "high"})
    assert sync.sync(j, None, [], {"phase": "Pending"}) == 0.0  # shown by the next reconcile
    gate = sync.gate(j, None)
    assert gate is not None and "WorkloadPriorityClass 'high' does not exist" in gate.problem
    assert sync.sync(j, None, [], {"phase": "Pending"}) == PROBLEM_RETRY_S
    assert fk.calls == []
    fk.cluster[("workloadpriorityclasses", "high")] = {"value": 1000}
    assert sync.sync(j, None, [], {"phase": "Pending"}) == 0.0  # the problem clears at once
    [(_, (_, body))] = fk.calls
    assert body["spec"]["priority"] == 1000
    assert sync.gate(j, None).problem == ""


def test_a_suspended_job_makes_its_workload_inactive(world: Any) -> None:
    sync, fk = world
    wl = workload(*ADMITTED)
    assert sync.sync(queued({"suspend": True}), wl, [], RUNNING) is None
    assert fk.calls == [("patch", (WORKLOADS, {"spec": {"active": False}}))]
    cached = sync.cache.workload_of("uid-1")
    assert cached is not None and cached["spec"]["active"] is False


def test_quota_goes_back_only_once_the_worker_is_confirmed_gone(world: Any) -> None:
    sync, fk = world
    wl = workload(*ADMITTED, ("Evicted", "True", "Preempted"))
    fk.has_pods = True  # the cache was behind
    assert sync.sync(queued(), wl, [], RUNNING) == 1.0
    assert fk.kinds() == ["list"]
    fk.has_pods = False
    assert sync.sync(queued(), wl, [], RUNNING) is None
    assert fk.kinds() == ["list", "list", "status"]
    where, status = fk.calls[-1][1]
    assert where == WORKLOADS and "admission" not in status
    requeued = next(c for c in status["conditions"] if c["type"] == "Requeued")
    assert (requeued["status"], requeued["reason"]) == ("True", "Preempted")
    assert sync.sync(queued(), wl, [pod()], RUNNING) is None  # a pod in the cache: wait
    assert fk.kinds() == ["list", "list", "status"]


def test_a_finished_job_finishes_its_workload(world: Any) -> None:
    sync, fk = world
    done = {
        "phase": "Succeeded",
        "conditions": [{"type": "Finished", "status": "True", "message": "reached its stop"}],
    }
    assert sync.sync(queued(), workload(*ADMITTED), [], done) is None
    where, status = fk.calls[-1][1]
    finished = next(c for c in status["conditions"] if c["type"] == "Finished")
    assert (where, finished["reason"], finished["message"]) == (
        WORKLOADS,
        "Succeeded",
        "reached its stop",
    )


def test_a_conflict_looks_again_shortly(world: Any) -> None:
    sync, fk = world
    fk.conflict = True
    assert sync.sync(queued({"suspend": True}), workload(*ADMITTED), [], RUNNING) == 0.5


def test_the_worker_pod_lands_on_the_assigned_flavors(world: Any) -> None:
    sync, fk = world
    fk.cluster[("resourceflavors", "gpu")] = {
        "metadata": {"name": "gpu"},
        "spec": {"nodeLabels": {"pool": "gpu"}, "tolerations": [{"key": "gpu"}]},
    }
    j = queued()
    gate = sync.gate(j, workload(*ADMITTED))
    assert gate is not None and gate.may_run
    placed = sync.place(build_worker_pod(j, 1, PodSettings()), gate)
    assert placed["spec"]["nodeSelector"] == {"pool": "gpu"}
    assert {"key": "gpu"} in placed["spec"]["tolerations"]
    assert placed["metadata"]["annotations"][WORKLOAD_ANNOTATION] == "trainablejob-j-uid-1"
