"""One reconcile against a fake of our Kubernetes module: the order of writes
(status before the pod), and nothing done when the status write conflicts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubetune_operator import handlers, kube, storageio
from kubetune_operator.podspec import PodSettings


class FakeKube:
    def __init__(self, job: dict[str, Any], pods: list[dict[str, Any]] | None = None):
        self.job = job
        self.pods = pods or []
        self.calls: list[tuple[str, Any]] = []
        self.conflict = False

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.job)

    def list_job_pods(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pods)

    def replace_status(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        if self.conflict:
            raise kube.Conflict("changed")
        self.calls.append(("status", copy.deepcopy(status)))
        self.job["status"] = status

    def create_pod(self, namespace: str, pod: dict[str, Any]) -> bool:
        self.calls.append(("create", pod["metadata"]["name"]))
        return True

    def delete_pod(self, namespace: str, name: str) -> None:
        self.calls.append(("delete", name))

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}

    def post_event(self, body: dict[str, Any], etype: str, reason: str, message: str) -> None:
        self.calls.append(("event", reason))


def a_job(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "j", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": {
            "trainable": "m:T",
            "storage": {"uri": "s3://b/p", "secretRef": {"name": "creds"}},
        },
        "status": status,
    }


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(job: dict[str, Any], pods: list[dict[str, Any]] | None = None) -> FakeKube:
        fk = FakeKube(job, pods)
        for name in ("get_job", "list_job_pods", "replace_status", "create_pod", "delete_pod"):
            monkeypatch.setattr(kube, name, getattr(fk, name))
        monkeypatch.setattr(kube, "read_secret", fk.read_secret)
        monkeypatch.setattr(kube, "post_event", fk.post_event)
        monkeypatch.setattr(storageio, "read_progress", lambda job, creds: None)
        return fk

    return install


def test_status_is_written_before_the_pod_is_created(fake: Any) -> None:
    fk = fake(a_job())
    handlers.reconcile("ns", "j", PodSettings())
    writes = [c for c in fk.calls if c[0] in ("status", "create")]
    assert [kind for kind, _ in writes] == ["status", "create"]
    assert writes[0][1]["workerPod"] == "j-worker-1" == writes[1][1]


def test_a_refused_pod_fails_the_job_with_the_apis_reason(
    fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fk = fake(a_job())

    def refuse(namespace: str, pod: dict[str, Any]) -> bool:
        raise kube.Rejected("spec.containers[0].env[1].value: Invalid value")

    monkeypatch.setattr(kube, "create_pod", refuse)
    handlers.reconcile("ns", "j", PodSettings())
    status = fk.job["status"]
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec" and "env[1]" in failed["message"]


def test_conflict_means_no_action(fake: Any) -> None:
    fk = fake(a_job())
    fk.conflict = True
    handlers.reconcile("ns", "j", PodSettings())
    assert fk.calls == []


def test_unchanged_status_is_not_written(fake: Any) -> None:
    fk = fake(a_job())
    handlers.reconcile("ns", "j", PodSettings())
    fk.pods = [
        {
            "metadata": {"name": "j-worker-1", "uid": "p1"},
            "status": {"phase": "Running"},
        }
    ]
    handlers.reconcile("ns", "j", PodSettings())
    fk.calls.clear()
    handlers.reconcile("ns", "j", PodSettings())
    assert fk.calls == []


def test_progress_is_read_with_the_jobs_secret(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fk = fake(a_job(workerPod="j-worker-1", attempt=1, phase="Running"))
    seen: list[Any] = []
    monkeypatch.setattr(storageio, "read_progress", lambda job, creds: seen.append(creds))
    handlers.reconcile("ns", "j", PodSettings())
    assert seen == [{"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}]
    assert fk.calls  # status moved on


def test_finished_job_reads_no_storage(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake(a_job(phase="Succeeded", workerPod="j-worker-1", attempt=1))

    def boom(*_: Any) -> None:
        raise AssertionError("storage read for a finished job")

    monkeypatch.setattr(storageio, "read_progress", boom)
    handlers.reconcile("ns", "j", PodSettings())
