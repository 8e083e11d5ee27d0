"""One reconcile against the cache and a fake of our Kubernetes module: the
order of writes (status before the pod), nothing done on a conflict or from a
stale cache, and what a job costs (API and S3 calls) when nothing changes."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import orjson
import pytest
from operator_factories import job_body, progress_doc, worker_pod

from kubetune_operator import kube, storageio
from kubetune_operator.controller import Controller, ControllerSettings

KEY = ("ns", "j")


class FakeKube:
    def __init__(self, job: dict[str, Any]):
        self.job = job
        self.calls: list[tuple[str, Any]] = []
        self.conflict = False

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", name))
        return copy.deepcopy(self.job)

    def replace_status(self, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        if self.conflict or body["metadata"]["resourceVersion"] != self.rv:
            raise kube.Conflict("changed")
        self.calls.append(("status", copy.deepcopy(status)))
        self.job["status"] = status
        self.job["metadata"]["resourceVersion"] = str(int(self.rv) + 1)
        return copy.deepcopy(self.job)

    @property
    def rv(self) -> str:
        return str(self.job["metadata"]["resourceVersion"])

    def create_pod(self, namespace: str, pod: dict[str, Any]) -> bool:
        self.calls.append(("create", pod["metadata"]["name"]))
        return True

    def delete_pod(self, namespace: str, name: str) -> None:
        self.calls.append(("delete", name))

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        self.calls.append(("secret", name))
        return {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}

    def post_event(self, body: dict[str, Any], etype: str, reason: str, message: str) -> None:
        self.calls.append(("event", reason))

    def api_calls(self) -> list[str]:
        return [kind for kind, _ in self.calls if kind != "event"]


def a_job(**status: Any) -> dict[str, Any]:
    """The job's body, its storage naming a Secret; uid u1 as worker_pod's job_uid."""
    storage = {"uri": "s3://b/p", "secretRef": {"name": "creds"}}
    spec = {"trainable": "m:T", "storage": storage}
    return job_body(spec, status, uid="u1", resource_version="10")


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Any:
    """(controller, fake kube, S3 reads) with the job in the controller's cache."""

    def install(job: dict[str, Any], pods: list[dict[str, Any]] = ()) -> Any:  # type: ignore[assignment]
        fk = FakeKube(job)
        for name in ("get_job", "replace_status", "create_pod", "delete_pod", "read_secret"):
            monkeypatch.setattr(kube, name, getattr(fk, name))
        monkeypatch.setattr(kube, "post_event", fk.post_event)
        reads: list[Any] = []

        def read_progress(job: Any, creds: Any) -> None:
            reads.append(creds)

        monkeypatch.setattr(storageio, "read_progress", read_progress)
        ctl = Controller(ControllerSettings())
        ctl.cache.put_job(copy.deepcopy(job))
        for pod in pods:
            ctl.cache.put_pod(pod)
        return ctl, fk, reads

    return install


def test_status_is_written_before_the_pod_is_created(world: Any) -> None:
    ctl, fk, _ = world(a_job())
    ctl.reconcile(KEY)
    writes = [c for c in fk.calls if c[0] in ("status", "create")]
    assert [kind for kind, _ in writes] == ["status", "create"]
    assert writes[0][1]["workerPod"] == "j-worker-1" == writes[1][1]


def test_a_refused_pod_fails_the_job_with_the_apis_reason(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctl, fk, _ = world(a_job())

    def refuse(namespace: str, pod: dict[str, Any]) -> bool:
        raise kube.Rejected("spec.containers[0].env[1].value: Invalid value")

    monkeypatch.setattr(kube, "create_pod", refuse)
    ctl.reconcile(KEY)
    status = fk.job["status"]
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec" and "env[1]" in failed["message"]


def test_conflict_means_no_action_and_a_fresh_read(world: Any) -> None:
    ctl, fk, _ = world(a_job())
    fk.conflict = True
    assert ctl.reconcile(KEY) == 0.0  # decide again at once
    assert fk.api_calls() == ["get"]


def test_a_stale_cache_never_acts(world: Any) -> None:
    # The job moved on (attempt 2) but the cache still shows attempt 1 and a
    # pod of attempt 2: deleting that pod from the stale view would be wrong.
    job = a_job(phase="Running", workerPod="j-worker-1", attempt=1, workerPodUID="p1")
    ctl, fk, _ = world(job, [worker_pod(), worker_pod("j-worker-2", uid="p2")])
    ctl.reconcile(KEY)  # settles status (conditions) for attempt 1
    fk.calls.clear()
    fk.job["metadata"]["resourceVersion"] = "99"  # changed behind the cache
    fk.job["status"]["workerPod"] = "j-worker-2"
    ctl.reconcile(KEY)
    assert "delete" not in fk.api_calls()
    assert fk.api_calls()[0] in ("get",)  # a status write would have conflicted instead


def test_unchanged_job_costs_nothing(world: Any) -> None:
    ctl, fk, reads = world(a_job(), [])
    ctl.reconcile(KEY)
    ctl.cache.put_pod(worker_pod(phase="Pending"))
    ctl.reconcile(KEY)
    fk.calls.clear()
    for _ in range(3):
        ctl.reconcile(KEY)
    assert fk.calls == [] and reads == []  # a waiting job: no API request, no S3 read


def test_a_suspended_job_costs_nothing(world: Any) -> None:
    job = a_job()
    job["spec"]["suspend"] = True
    ctl, fk, reads = world(job)
    ctl.reconcile(KEY)
    assert fk.job["status"]["phase"] == "Suspended"
    fk.calls.clear()
    for _ in range(3):
        assert ctl.reconcile(KEY) is None  # nothing scheduled either
    assert fk.calls == [] and reads == []


def test_progress_file_read_once_with_the_jobs_secret_then_pushes(world: Any) -> None:
    job = a_job(workerPod="j-worker-1", attempt=1, phase="Running", workerPodUID="p1")
    ctl, fk, reads = world(job, [worker_pod()])
    ctl.reconcile(KEY)
    assert reads == [{"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}]
    doc = progress_doc("u1", 7, loss=0.5)
    assert ctl.book.push("u1", orjson.dumps(doc), doc["updated"])
    ctl.reconcile(KEY)
    assert fk.job["status"]["lastResult"]["training_iteration"] == 7
    assert fk.job["status"]["iteration"] == 7
    assert len(reads) == 1  # pushes arrive: the file is not read again


def test_a_silent_worker_is_polled_through_storage(world: Any) -> None:
    job = a_job(workerPod="j-worker-1", attempt=1, phase="Running", workerPodUID="p1")
    ctl, _, reads = world(job, [worker_pod()])
    now = [1000.0]
    ctl.book._clock = lambda: now[0]
    assert ctl.reconcile(KEY) == pytest.approx(ctl.book.silent_after_s)
    assert len(reads) == 1
    now[0] += ctl.book.silent_after_s / 2
    ctl.reconcile(KEY)
    assert len(reads) == 1
    now[0] += ctl.book.silent_after_s
    ctl.reconcile(KEY)
    assert len(reads) == 2


def test_a_pod_end_reads_the_final_progress_once(world: Any) -> None:
    job = a_job(workerPod="j-worker-1", attempt=1, phase="Running", workerPodUID="p1")
    ctl, _, reads = world(job, [worker_pod()])
    doc = progress_doc("u1", 3, loss=0.5)
    ctl.book.push("u1", orjson.dumps(doc), doc["updated"])
    ctl.reconcile(KEY)
    assert reads == []
    ctl.cache.put_pod(worker_pod(phase="Failed"))  # ended without a final push
    ctl.reconcile(KEY)
    assert len(reads) == 1


def test_finished_job_reads_no_storage(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ctl, fk, reads = world(a_job(phase="Succeeded", workerPod="j-worker-1", attempt=1))
    ctl.reconcile(KEY)
    assert reads == []
    assert "secret" not in fk.api_calls()


def test_progress_writes_of_one_job_are_spaced(world: Any) -> None:
    job = a_job(workerPod="j-worker-1", attempt=1, phase="Running", workerPodUID="p1")
    ctl, _, _ = world(job, [worker_pod()])
    doc = progress_doc("u1", 1, loss=0.5)
    ctl.book.push("u1", orjson.dumps(doc), doc["updated"])
    ctl.reconcile(KEY)
    ctl.progress_pushed(KEY)
    ctl.progress_pushed(KEY)
    assert len(ctl.progress_line) == 1  # in line once, however many reports
    pacer = threading.Thread(target=ctl._pace, daemon=True)
    pacer.start()
    time.sleep(0.2)
    ctl.stop()
    pacer.join(5)
    assert ctl.queue.depth() == 1  # let through, but not at once: the job wrote just now
    assert ctl.queue.get(timeout=0) is None


def test_a_pod_end_with_its_final_report_pushed_reads_nothing(world: Any) -> None:
    job = a_job(workerPod="j-worker-1", attempt=1, phase="Running", workerPodUID="p1")
    ctl, _, reads = world(job, [worker_pod()])
    doc = {**progress_doc("u1", 3, loss=0.5), "state": "stopped"}
    ctl.book.push("u1", orjson.dumps(doc), doc["updated"], "j-worker-1")
    ctl.cache.put_pod(worker_pod(phase="Failed"))
    ctl.reconcile(KEY)
    ctl.cache.forget_pod(worker_pod(phase="Failed"))
    ctl.reconcile(KEY)
    assert reads == []
