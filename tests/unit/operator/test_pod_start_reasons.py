"""Why a worker pod cannot start reaches the job's status and events (a missing
Secret, an image that does not pull), and heals without failing the job."""

from __future__ import annotations

from typing import Any

import pytest
from operator_factories import NOW, job, worker_pod

from kubetune_operator.conditions import get_condition
from kubetune_operator.model import PodView
from kubetune_operator.statemachine import compute_decision


def pod_body(waiting: dict[str, str] | None, phase: str = "Pending") -> dict[str, Any]:
    """The worker pod, its container waiting for `waiting`'s reason (None: running)."""
    body = worker_pod(uid="pod-uid", phase=phase)
    state = {"waiting": waiting} if waiting is not None else {"running": {}}
    body["status"]["containerStatuses"] = [{"name": "worker", "state": state}]
    return body


SECRET = {"reason": "CreateContainerConfigError", "message": 'secret "missing" not found'}


@pytest.mark.parametrize(
    ("waiting", "reason"),
    [
        (SECRET, "CreateContainerConfigError"),
        ({"reason": "ImagePullBackOff", "message": 'Back-off pulling "x"'}, "ImagePullBackOff"),
        ({"reason": "ErrImagePull", "message": "not found"}, "ErrImagePull"),
        ({"reason": "InvalidImageName", "message": "bad name"}, "InvalidImageName"),
        ({"reason": "ContainerCreating"}, ""),  # a start in progress, not a problem
        (None, ""),
    ],
    ids=["missing-secret", "image-backoff", "image-pull", "image-name", "creating", "running"],
)
def test_pod_view_keeps_only_reasons_that_stop_a_start(
    waiting: dict[str, str] | None, reason: str
) -> None:
    view = PodView.from_pod(pod_body(waiting))
    assert view.waiting_reason == reason
    assert (view.waiting_message != "") == bool(reason and waiting and waiting.get("message"))


def test_a_missing_secret_is_named_in_the_running_condition_and_an_event() -> None:
    first = compute_decision(job(), [], None, NOW)
    d = compute_decision(job(status=first.status), [PodView.from_pod(pod_body(SECRET))], None, NOW)
    assert d.status["phase"] == "Pending"
    running = get_condition(d.status["conditions"], "Running")
    assert running is not None and running["status"] == "False"
    assert running["reason"] == "CreateContainerConfigError"
    assert 'secret "missing" not found' in running["message"]
    assert "j-worker-1" in running["message"]
    assert [(e[0], e[1]) for e in d.events] == [("Warning", "CreateContainerConfigError")]
    assert not d.delete_pods and d.create_pod is None  # it may heal: nothing is failed


def test_the_same_reason_again_writes_nothing_new() -> None:
    pods = [PodView.from_pod(pod_body(SECRET))]
    first = compute_decision(job(), [], None, NOW)
    second = compute_decision(job(status=first.status), pods, None, NOW)
    third = compute_decision(job(status=second.status), pods, None, NOW)
    assert third.status == second.status and third.events == []


def test_it_heals_once_the_secret_exists() -> None:
    first = compute_decision(job(), [], None, NOW)
    stuck = compute_decision(
        job(status=first.status), [PodView.from_pod(pod_body(SECRET))], None, NOW
    )
    healed = compute_decision(
        job(status=stuck.status), [PodView.from_pod(pod_body(None, phase="Running"))], None, NOW
    )
    assert healed.status["phase"] == "Running"
    running = get_condition(healed.status["conditions"], "Running")
    assert running is not None and running["status"] == "True" and running["reason"] == "Running"
    for ctype in ("Failed", "Finished"):
        c = get_condition(healed.status["conditions"], ctype)
        assert c is not None and c["status"] == "False"


def test_a_restarting_job_whose_pod_cannot_start_says_so() -> None:
    status = compute_decision(job(), [], None, NOW).status
    status["phase"] = "Restarting"
    d = compute_decision(job(status=status), [PodView.from_pod(pod_body(SECRET))], None, NOW)
    assert d.status["phase"] == "Pending"
    assert [(e[0], e[1]) for e in d.events] == [("Warning", "CreateContainerConfigError")]
