"""The operator's state machine, case by case, without a cluster."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from operator_factories import NOW, UID, job, pod

from kubetune_contract import EXIT_BAD_TRAINABLE, EXIT_STOPPED, EXIT_TRAINABLE_ERROR, Progress
from kubetune_operator.conditions import get_condition
from kubetune_operator.model import JobView, PodView
from kubetune_operator.statemachine import cap_result, compute_decision, needs_restore_check


def cond(status: dict[str, Any], ctype: str) -> str:
    c = get_condition(status["conditions"], ctype)
    assert c is not None
    return str(c["status"])


def run(j: JobView, pods: list[PodView] = (), progress: Progress | None = None, **kw: Any):  # type: ignore[assignment]
    return compute_decision(j, list(pods), progress, kw.pop("now", NOW), **kw)


def test_new_job_records_pod_name_and_creates_it():
    d = run(job())
    assert d.status["workerPod"] == "j-worker-1"
    assert d.create_pod == "j-worker-1"
    assert d.status["phase"] == "Pending"
    assert d.status["attempt"] == 1
    # every condition type is set on the first reconcile
    for ctype in ("Running", "Suspended", "Checkpointed", "Complete", "Failed", "Finished"):
        assert get_condition(d.status["conditions"], ctype) is not None


def test_pod_recorded_but_missing_is_created_again_idempotently():
    first = run(job())
    again = run(job(status=first.status))
    assert again.create_pod == "j-worker-1"
    assert again.status["attempt"] == 1


def test_running_pod_gives_running_phase_and_condition():
    s = run(job()).status
    d = run(job(status=s), [pod()])
    assert d.status["phase"] == "Running"
    assert cond(d.status, "Running") == "True"
    assert d.status["workerPodUID"] == "uid-j-worker-1"
    assert d.create_pod is None


def test_unschedulable_pod_stays_pending_with_scheduler_message():
    s = run(job()).status
    d = run(job(status=s), [pod(phase="Pending", unschedulable_message="0/3 nodes: GPU")])
    assert d.status["phase"] == "Pending"
    running = get_condition(d.status["conditions"], "Running")
    assert running and running["reason"] == "Unschedulable" and "GPU" in running["message"]


def test_success_is_terminal_and_sticky():
    s = run(job(), [pod()]).status
    s = run(job(status=s), [pod()]).status
    d = run(job(status=s), [pod(phase="Succeeded", exit_code=0)])
    assert d.status["phase"] == "Succeeded"
    assert cond(d.status, "Complete") == cond(d.status, "Finished") == "True"
    assert cond(d.status, "Failed") == "False"
    # a later tick never leaves the terminal phase
    d2 = run(job(status=d.status), [])
    assert d2.status["phase"] == "Succeeded" and d2.create_pod is None


def _running_status() -> dict[str, Any]:
    s = run(job()).status
    return run(job(status=s), [pod()]).status


def test_crash_counts_a_failure_and_restarts_after_old_pod_is_gone():
    s = _running_status()
    crashed = pod(phase="Failed", exit_code=EXIT_TRAINABLE_ERROR, exit_message="boom")
    d = run(job(status=s), [crashed])
    assert d.status["failures"] == 1 and d.status["preemptions"] == 0
    assert d.status["phase"] == "Restarting"
    assert d.status["workerPod"] == "j-worker-2"
    assert d.delete_pods == ["j-worker-1"] and d.create_pod is None
    # the old pod is still terminating: no second worker yet, and no second count
    d2 = run(job(status=d.status), [pod(phase="Failed", exit_code=1, deleting=True)])
    assert d2.create_pod is None and d2.status["failures"] == 1
    # it is gone: the new pod starts
    d3 = run(job(status=d2.status), [])
    assert d3.create_pod == "j-worker-2" and d3.status["failures"] == 1


def test_failures_beyond_max_failures_fail_the_job():
    s = _running_status()
    s["failures"] = 2
    d = run(job({"maxFailures": 2}, s), [pod(phase="Failed", exit_code=1, exit_message="boom")])
    assert d.status["phase"] == "Failed"
    failed = get_condition(d.status["conditions"], "Failed")
    assert failed and failed["reason"] == "MaxFailuresExceeded" and "boom" in failed["message"]


def test_unlimited_failures():
    s = _running_status()
    s["failures"] = 100
    d = run(job({"maxFailures": -1}, s), [pod(phase="Failed", exit_code=137)])
    assert d.status["phase"] == "Restarting" and d.status["failures"] == 101


def test_hopeless_exit_fails_at_once_with_the_workers_message():
    s = _running_status()
    msg = "InvalidTrainable: cannot import 'nope': No module named 'nope'"
    d = run(job(status=s), [pod(phase="Failed", exit_code=EXIT_BAD_TRAINABLE, exit_message=msg)])
    assert d.status["phase"] == "Failed" and d.status["failures"] == 0
    failed = get_condition(d.status["conditions"], "Failed")
    assert failed and failed["reason"] == "InvalidTrainable" and failed["message"] == msg


@pytest.mark.parametrize(
    "ended",
    [
        pytest.param(pod(phase="Failed", exit_code=EXIT_STOPPED), id="sigterm-checkpointed"),
        pytest.param(pod(phase="Failed", exit_code=137, disrupted=True), id="disruption-target"),
    ],
)
def test_preemption_counts_apart_from_failures(ended: PodView):
    s = _running_status()
    d = run(job(status=s), [ended])
    assert d.status["preemptions"] == 1 and d.status["failures"] == 0
    assert d.status["workerPod"] == "j-worker-2"


def test_pod_vanishing_after_being_seen_is_a_preemption():
    s = _running_status()
    d = run(job(status=s), [])
    assert d.status["preemptions"] == 1
    assert d.status["workerPod"] == "j-worker-2" and d.create_pod == "j-worker-2"


def test_suspend_signals_waits_and_ends_suspended_without_pods():
    s = _running_status()
    d = run(job({"suspend": True}, s), [pod()])
    assert d.delete_pods == ["j-worker-1"] and d.status["phase"] == "Suspending"
    d2 = run(job({"suspend": True}, d.status), [pod(deleting=True)])
    assert d2.delete_pods == [] and d2.status["phase"] == "Suspending"
    ckpt = {"path": "s3://b/p/ns/j/checkpoint_000007", "iteration": 7, "time": "t"}
    prog = Progress(run_id=UID, state="stopped", iteration=7, latest_checkpoint=ckpt)
    stopped = pod(phase="Failed", exit_code=EXIT_STOPPED, deleting=True)
    d3 = run(job({"suspend": True}, d2.status), [stopped], prog)
    assert d3.status["phase"] == "Suspending" and d3.status["preemptions"] == 0
    d4 = run(job({"suspend": True}, d3.status), [], prog)
    assert d4.status["phase"] == "Suspended"
    assert cond(d4.status, "Suspended") == "True"
    assert d4.status["latestCheckpoint"] == ckpt and d4.status["workerPod"] == ""
    assert d4.status["preemptions"] == 0 and d4.status["failures"] == 0
    # resume: a new attempt, and the Suspended condition goes False
    d5 = run(job({"suspend": False}, d4.status), [])
    assert d5.create_pod == "j-worker-2" and d5.status["phase"] == "Pending"
    assert cond(d5.status, "Suspended") == "False"


def test_suspend_undone_before_pod_ended_counts_nothing():
    s = _running_status()
    s = run(job({"suspend": True}, s), [pod()]).status
    d = run(job({"suspend": False}, s), [pod(phase="Failed", exit_code=EXIT_STOPPED)])
    assert d.status["preemptions"] == 0 and d.status["failures"] == 0
    assert d.status["workerPod"] == "j-worker-2"


def test_job_created_suspended_never_starts():
    d = run(job({"suspend": True}))
    assert d.status["phase"] == "Suspended" and d.create_pod is None


def test_progress_of_another_run_is_ignored():
    s = _running_status()
    other = Progress(run_id="someone-else", state="running", iteration=99, last_result={"a": 1})
    d = run(job(status=s), [pod()], other)
    assert "lastResult" not in d.status and d.status.get("iteration") != 99


def test_progress_fills_result_and_checkpoints():
    s = _running_status()
    ckpt = {"path": "s3://b/p/ns/j/checkpoint_000010", "iteration": 10, "time": "t"}
    prog = Progress(
        run_id=UID,
        state="running",
        iteration=12,
        last_result={"loss": 0.5, "training_iteration": 12, "nested": {"x": 1}},
        latest_checkpoint=ckpt,
        checkpoints=[ckpt] * 15,
    )
    d = run(job(status=s), [pod()], prog)
    assert d.status["iteration"] == 12
    assert d.status["lastResult"] == {"loss": 0.5, "training_iteration": 12}
    assert d.status["latestCheckpoint"] == ckpt and len(d.status["checkpoints"]) == 10
    assert cond(d.status, "Checkpointed") == "True"
    assert any(e[1] == "CheckpointCommitted" for e in d.events)


def test_deadline_fails_and_stops_the_worker():
    s = _running_status()
    s["startTime"] = "2026-01-02T03:00:00Z"
    d = run(job({"activeDeadlineSeconds": 60}, s), [pod()])
    assert d.status["phase"] == "Failed" and d.delete_pods == ["j-worker-1"]
    assert get_condition(d.status["conditions"], "Failed")["reason"] == "DeadlineExceeded"  # type: ignore[index]


def test_restore_error_fails_before_any_pod():
    j = job({"restoreFrom": "s3://b/p/ns/x/checkpoint_000001"})
    assert needs_restore_check(j, None)
    d = run(j, restore_error="restoreFrom ...: is incomplete")
    assert d.status["phase"] == "Failed" and d.create_pod is None


def test_restored_from_is_recorded_when_the_pod_starts():
    j = job({"restoreFrom": "s3://b/p/ns/x/checkpoint_000001"})
    d = run(j)
    assert d.status["restoredFrom"] == "s3://b/p/ns/x/checkpoint_000001"
    assert not needs_restore_check(job(j.spec, d.status), None)


def test_stray_pods_of_older_attempts_are_deleted_before_a_new_one():
    s = _running_status()
    s["workerPod"], s["attempt"] = "j-worker-3", 3
    s.pop("workerPodUID")
    d = run(job(status=s), [pod("j-worker-1")])
    assert d.delete_pods == ["j-worker-1"] and d.create_pod is None


def test_condition_transition_time_moves_only_on_flip():
    s = _running_status()
    t1 = get_condition(s["conditions"], "Running")["lastTransitionTime"]  # type: ignore[index]
    later = NOW + timedelta(minutes=5)
    s2 = run(job(status=s), [pod()], now=later).status
    assert get_condition(s2["conditions"], "Running")["lastTransitionTime"] == t1  # type: ignore[index]


def test_cap_result_keeps_scalars_and_bounds():
    result = {f"k{i}": i for i in range(100)} | {"s": "x" * 1000, "nan": float("nan")}
    capped = cap_result(result)
    assert len(capped) == 30 and all(isinstance(v, int) for v in capped.values())
    assert cap_result({"s": "x" * 1000})["s"] == "x" * 256
    assert cap_result({"nan": float("nan")})["nan"] is None


def test_a_silent_worker_makes_running_unknown_and_a_fresh_one_true():
    s = _running_status()
    stale = Progress(run_id=UID, state="running", iteration=3, updated=NOW.timestamp() - 600)
    d = run(job(status=s), [pod()], stale)
    running = get_condition(d.status["conditions"], "Running")
    assert running and running["status"] == "Unknown" and running["reason"] == "HeartbeatStale"
    assert d.status["phase"] == "Running"
    fresh = Progress(run_id=UID, state="running", iteration=4, updated=NOW.timestamp() - 5)
    d2 = run(job(status=d.status), [pod()], fresh)
    assert cond(d2.status, "Running") == "True"


def test_storage_error_is_hopeless_at_start_but_retried_mid_run():
    from kubetune_contract import EXIT_STORAGE

    s = _running_status()
    failed = pod(phase="Failed", exit_code=EXIT_STORAGE, exit_message="StorageError: bucket")
    assert run(job(status=s), [failed]).status["phase"] == "Failed"
    s["iteration"] = 7
    d = run(job(status=s), [failed])
    assert d.status["phase"] == "Restarting" and d.status["failures"] == 1


def test_a_pod_waiting_for_a_node_costs_no_status_write():
    s = run(job()).status
    d = run(job(status=s), [pod(phase="Pending")])
    assert d.status == s and d.create_pod is None
    gone = run(job(status=d.status), [])  # deleted before it ran: made again, not a preemption
    assert gone.create_pod == "j-worker-1" and gone.status["preemptions"] == 0


def test_shipped_code_outside_the_run_folder_fails_the_job_without_a_pod():
    sha = "a" * 64
    inside = {"uri": f"s3://b/p/ns/j/.kubetune/code/{sha}.pkl", "sha256": sha, "python": "3.11"}
    spec = {"trainable": None, "code": inside}
    assert run(job(spec)).create_pod == "j-worker-1"
    for uri in (
        f"s3://b/p/ns/other/.kubetune/code/{sha}.pkl",
        f"s3://b/p/ns/j/../other/.kubetune/code/{sha}.pkl",
        f"s3://evil/p/ns/j/.kubetune/code/{sha}.pkl",
    ):
        d = run(job({"trainable": None, "code": {**inside, "uri": uri}}))
        assert d.create_pod is None and d.status["phase"] == "Failed"
        failed = get_condition(d.status["conditions"], "Failed")
        assert failed and failed["reason"] == "InvalidSpec" and "outside" in failed["message"]
