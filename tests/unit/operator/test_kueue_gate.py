"""Kueue's contract for TrainableJobs, without a cluster: the Workload built for
a queued job, how Kueue's answer is read, the Workload writes owed, and the
state machine's gate (no pod before admission; eviction = lossless stop)."""

from __future__ import annotations

from typing import Any

import operator_factories as factories
import pytest
from operator_factories import NOW, pod

from kubetune_contract import EXIT_STOPPED
from kubetune_operator.conditions import get_condition
from kubetune_operator.kueue.gate import (
    PRIORITY_LABEL,
    QUEUE_LABEL,
    QueueGate,
    WorkloadView,
    apply_flavors,
    build_workload,
    cleared_status,
    desired_spec,
    plan_workload,
    spec_hash,
    workload_name,
)
from kubetune_operator.model import JobView, PodView
from kubetune_operator.podspec import PodSettings, build_worker_pod
from kubetune_operator.statemachine import compute_decision

QUEUED = {QUEUE_LABEL: "team-a"}


def job(
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
) -> JobView:
    """A queued job asking for a GPU (its uid names its Workload)."""
    gpu = {"resources": {"limits": {"nvidia.com/gpu": 1}}, **(spec or {})}
    return factories.job(gpu, status, labels=labels or QUEUED, uid="0123456789ab")


def cond(ctype: str, status: str, reason: str = "R", message: str = "") -> dict[str, Any]:
    return {"type": ctype, "status": status, "reason": reason, "message": message}


def workload(*conds: dict[str, Any], active: bool = True, flavors: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "trainablejob-j-01234567", "uid": "wl-1", "generation": 1},
        "spec": {"active": active},
        "status": {"conditions": list(conds)},
    }
    if flavors:
        body["status"]["admission"] = {
            "clusterQueue": "cq",
            "podSetAssignments": [{"name": "main", "flavors": {"nvidia.com/gpu": "gpu"}}],
        }
    return body


ADMITTED = workload(cond("QuotaReserved", "True"), cond("Admitted", "True"), flavors=True)
PENDING = workload(
    cond("QuotaReserved", "False", "Pending", "insufficient quota for nvidia.com/gpu in flavor gpu")
)
EVICTED = workload(
    cond("QuotaReserved", "True"),
    cond("Admitted", "True"),
    cond("Evicted", "True", "Preempted", "Preempted to accommodate a workload (UID: x)"),
    flavors=True,
)


def gate(body: dict[str, Any] | None) -> QueueGate:
    return QueueGate("team-a", WorkloadView.from_body(body) if body else None)


def decide(j: JobView, pods: list[PodView], wl: dict[str, Any] | None):  # type: ignore[no-untyped-def]
    return compute_decision(j, pods, None, NOW, None, gate(wl))


def message(status: dict[str, Any], ctype: str) -> str:
    c = get_condition(status["conditions"], ctype)
    assert c is not None
    return f"{c['status']} {c['reason']}: {c['message']}"


# reading Kueue's answer


def test_workload_view_reads_admission_eviction_and_waiting():
    assert WorkloadView.from_body(ADMITTED).may_run
    assert WorkloadView.from_body(ADMITTED).flavors == {"nvidia.com/gpu": "gpu"}
    pending = WorkloadView.from_body(PENDING)
    assert not pending.may_run and "insufficient quota" in pending.waiting_message
    evicted = WorkloadView.from_body(EVICTED)
    assert evicted.admitted and evicted.evicted and not evicted.may_run
    assert not WorkloadView.from_body(
        workload(*ADMITTED["status"]["conditions"], active=False)
    ).may_run


# the Workload


def test_workload_is_owned_by_the_job_and_counts_what_the_pod_asks_for():
    j = job(labels={**QUEUED, PRIORITY_LABEL: "high"})
    wl = build_workload(j, build_worker_pod(j, 1, PodSettings()), 1000)
    owner = wl["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("TrainableJob", j.uid, True)
    spec = wl["spec"]
    assert spec["queueName"] == "team-a" and spec["active"] is True
    assert spec["priorityClassRef"]["name"] == "high" and spec["priority"] == 1000
    (podset,) = spec["podSets"]
    assert podset["count"] == 1
    resources = podset["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == "1"  # limits count as requests
    assert wl["metadata"]["name"] == workload_name(j)


def test_spec_hash_ignores_active_and_priority_but_not_the_pod_set():
    j = job()
    pod = build_worker_pod(j, 1, PodSettings())
    base = desired_spec(j, pod, None)
    suspended = desired_spec(job({"suspend": True}), pod, None)
    assert spec_hash(base) == spec_hash(suspended)
    bigger = job({"resources": {"limits": {"nvidia.com/gpu": 2}}})
    other = desired_spec(bigger, build_worker_pod(bigger, 1, PodSettings()), None)
    assert spec_hash(base) != spec_hash(other)


def test_plan_creates_a_workload_only_for_a_queued_unfinished_job():
    assert plan_workload(job(), None, "h", [], None).create
    assert plan_workload(job(labels={"x": "y"}), None, "h", [], None).empty
    assert plan_workload(job(), None, "h", [], (True, "done")).empty


def test_plan_recreates_a_changed_workload_only_while_it_holds_no_quota():
    pending, admitted = WorkloadView.from_body(PENDING), WorkloadView.from_body(ADMITTED)
    assert plan_workload(job(), pending, "new", [], None).delete
    assert plan_workload(job(), admitted, "new", [], None).empty


def test_plan_follows_suspend_with_active():
    view = WorkloadView.from_body(ADMITTED)
    assert plan_workload(job({"suspend": True}), view, "", [pod()], None).set_active is False
    inactive = WorkloadView.from_body(workload(active=False))
    assert plan_workload(job(), inactive, "", [], None).set_active is True


def test_plan_gives_quota_back_only_when_no_pod_is_left():
    view = WorkloadView.from_body(EVICTED)
    assert not plan_workload(job(), view, "", [pod(deleting=True)], None).clear_eviction
    assert plan_workload(job(), view, "", [], None).clear_eviction


def test_plan_finishes_the_workload_once_the_worker_has_stopped():
    view = WorkloadView.from_body(ADMITTED)
    assert plan_workload(job(), view, "", [pod()], (False, "deadline")).empty
    done = plan_workload(job(), view, "", [pod(phase="Succeeded", exit_code=0)], (True, "ok"))
    assert done.finish == (True, "ok")


def test_cleared_status_requeues_a_preempted_workload_as_kueue_does():
    status = cleared_status(EVICTED, "2026-01-02T03:04:05Z")
    types = {c["type"]: c for c in status["conditions"]}
    assert "admission" not in status
    assert types["QuotaReserved"]["status"] == "False"
    assert types["Admitted"]["status"] == "False"
    assert (types["Requeued"]["status"], types["Requeued"]["reason"]) == ("True", "Preempted")
    assert types["Evicted"]["status"] == "True"  # Kueue resets it at the next admission
    deactivated = workload(
        cond("QuotaReserved", "True"), cond("Evicted", "True", "Deactivated"), active=False
    )
    requeued = cleared_status(deactivated, "t")["conditions"]
    assert next(c for c in requeued if c["type"] == "Requeued")["status"] == "False"


def test_flavor_node_labels_and_tolerations_reach_the_pod():
    j = job({"template": {"spec": {"nodeSelector": {"zone": "a"}}}})
    flavor = {
        "metadata": {"name": "gpu"},
        "spec": {
            "nodeLabels": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
    pod = apply_flavors(build_worker_pod(j, 1, PodSettings()), [flavor], ())
    assert pod["spec"]["nodeSelector"] == {"zone": "a", "nvidia.com/gpu.present": "true"}
    assert pod["spec"]["tolerations"][0]["key"] == "gpu"
    clash = {"metadata": {"name": "f"}, "spec": {"nodeLabels": {"zone": "b"}}}
    with pytest.raises(ValueError, match="zone"):
        apply_flavors(build_worker_pod(j, 1, PodSettings()), [clash], ())


# the state machine's gate


def test_queued_job_waits_without_a_pod_and_says_why_in_kueues_words():
    d = decide(job(), [], None)
    assert d.create_pod is None and d.status["phase"] == "Pending"
    d = decide(job(status=d.status), [], PENDING)
    assert d.create_pod is None
    assert "insufficient quota for nvidia.com/gpu" in message(d.status, "Admitted")
    assert any("insufficient quota" in text for _, _, text in d.events)


def test_admitted_job_starts_its_pod():
    waiting = decide(job(), [], PENDING).status
    d = decide(job(status=waiting), [], ADMITTED)
    assert d.create_pod == "j-worker-1"
    assert message(d.status, "Admitted").startswith("True Admitted: admitted by ClusterQueue cq")


def test_unqueued_job_has_no_gate_and_no_admitted_condition():
    d = compute_decision(job(labels={"x": "y"}), [], None, NOW)
    assert d.create_pod == "j-worker-1"
    assert get_condition(d.status["conditions"], "Admitted") is None


def test_eviction_stops_the_worker_once_and_counts_one_preemption():
    s = decide(job(), [], ADMITTED).status
    s = decide(job(status=s), [pod()], ADMITTED).status
    assert s["phase"] == "Running"
    d = decide(job(status=s), [pod()], EVICTED)
    assert d.delete_pods == ["j-worker-1"] and d.status["preemptions"] == 1
    assert d.status["phase"] == "Restarting"
    again = decide(job(status=d.status), [pod(deleting=True)], EVICTED)
    assert again.status["preemptions"] == 1 and again.create_pod is None
    stopped = pod(phase="Failed", deleting=True, exit_code=EXIT_STOPPED)
    end = decide(job(status=again.status), [stopped], EVICTED)
    assert end.status["preemptions"] == 1 and end.status["failures"] == 0
    assert end.status["phase"] == "Pending" and end.create_pod is None
    requeued = workload(cond("QuotaReserved", "False", "Pending", "requeued"))
    gone = decide(job(status=end.status), [], requeued)
    assert gone.create_pod is None and gone.status["preemptions"] == 1
    back = decide(job(status=gone.status), [], ADMITTED)
    assert back.create_pod == "j-worker-2" and back.status["failures"] == 0


def test_user_suspend_of_a_queued_job_is_the_usual_lossless_suspend():
    s = decide(job(), [], ADMITTED).status
    s = decide(job(status=s), [pod()], ADMITTED).status
    d = decide(job({"suspend": True}, s), [pod()], ADMITTED)
    assert d.delete_pods == ["j-worker-1"] and d.status["phase"] == "Suspending"
    inactive = workload(cond("Evicted", "True", "Deactivated"), active=False)
    done = decide(job({"suspend": True}, d.status), [], inactive)
    assert done.status["phase"] == "Suspended" and done.status["preemptions"] == 0


def test_cache_keeps_our_written_workload_over_an_older_watch_event():
    from kubetune_operator.cache import ClusterCache

    cache = ClusterCache()

    def body(rv: str, reserved: str) -> dict[str, Any]:
        wl = workload(cond("QuotaReserved", reserved))
        wl["metadata"].update(
            namespace="ns",
            resourceVersion=rv,
            labels={"kubetune.io/job": "j", "kubetune.io/job-uid": "u"},
        )
        return wl

    assert cache.put_workload(body("10", "False")) == ("ns", "j")  # our write's result
    cache.put_workload(body("9", "True"), from_watch=True)  # late event from before it
    assert WorkloadView.from_body(cache.workload_of("u") or {}).quota_reserved is False
    cache.put_workload(body("11", "True"), from_watch=True)
    assert WorkloadView.from_body(cache.workload_of("u") or {}).quota_reserved is True
    cache.forget_workload(body("11", "True"))
    assert cache.workload_of("u") is None
