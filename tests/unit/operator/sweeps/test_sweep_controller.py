"""One sweep reconcile against the cache and fakes of our Kubernetes module and
of storage: trials made up to maxConcurrent, a scheduler's decision written
onto its trial before anything else, a finished trial's best read once, the
sweep's status written once and only when it changed."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kubetune_operator import kube, storageio
from kubetune_operator.cache import ClusterCache
from kubetune_operator.sweeps.controller import SweepController
from kubetune_operator.sweeps.plan import ANN_BEST, ANN_DECISIONS, ANN_PAUSED, ANN_STOPPED

KEY = ("ns", "s")


def a_sweep(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "s",
            "namespace": "ns",
            "uid": "sweep-uid",
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": {
            "metric": "score",
            "mode": "max",
            "paramSpace": {"q": {"grid": [1, 2, 3]}},
            "numSamples": 1,
            "maxConcurrent": 2,
            "scheduler": {
                "type": "asha",
                "asha": {"gracePeriod": 1, "reductionFactor": 2, "maxT": 8},
            },
            "jobTemplate": {"spec": {"trainable": "m:T", "storage": {"uri": "s3://b/p"}}},
            **spec,
        },
    }


class FakeKube:
    def __init__(self) -> None:
        self.trials: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.conflict = False

    def create_job(self, body: dict[str, Any]) -> dict[str, Any] | None:
        name = body["metadata"]["name"]
        if name in self.trials:
            return None
        body = copy.deepcopy(body)
        body["metadata"].update(uid=f"uid-{name}", resourceVersion="1")
        self.trials[name] = body
        self.calls.append(("create", name))
        return copy.deepcopy(body)

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        body = self.trials[name]
        for key, value in patch["metadata"].get("annotations", {}).items():
            annotations = body["metadata"].setdefault("annotations", {})
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        body["spec"].update(patch.get("spec") or {})
        self.calls.append(("patch", name, patch))
        return copy.deepcopy(body)

    def replace_sweep_status(self, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        if self.conflict:
            raise kube.Conflict("changed")
        self.calls.append(("status", copy.deepcopy(status)))
        return {**copy.deepcopy(body), "status": copy.deepcopy(status)}

    def kinds(self) -> list[str]:
        return [call[0] for call in self.calls]


class World:
    """A sweep controller with the sweep in its cache, a fake Kubernetes and
    fake storage (each trial's results rows, the tables written)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, sweep: dict[str, Any]) -> None:
        self.kube = FakeKube()
        for name in ("create_job", "patch_job", "replace_sweep_status"):
            monkeypatch.setattr(kube, name, getattr(self.kube, name))
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.tables: list[dict[str, Any]] = []
        monkeypatch.setattr(storageio, "read_trial_results", self._read)
        monkeypatch.setattr(storageio, "write_object", self._write)
        self.ctl = SweepController(ClusterCache(), lambda job: None)
        self.ctl.cache.put_sweep(sweep)

    def _read(self, job: Any, creds: Any) -> list[dict[str, Any]]:
        return self.rows.get(job.name, [])

    def _write(self, folder: str, name: str, data: bytes, storage: Any, creds: Any) -> bool:
        self.tables.append({"at": f"{folder}/{name}", **json.loads(data)})
        return True

    def trial_is(self, name: str, **status: Any) -> None:
        """The trial's worker moved on (as the job controller writes it)."""
        self.kube.trials[name]["status"] = status
        self.ctl.cache.put_job(copy.deepcopy(self.kube.trials[name]))

    def status(self) -> dict[str, Any]:
        sweep = self.ctl.cache.sweep(KEY)
        assert sweep is not None
        return dict(sweep.get("status") or {})


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Any:
    return lambda sweep: World(monkeypatch, sweep)


def reason_of(status: dict[str, Any], ctype: str) -> str:
    cond = next(c for c in status["conditions"] if c["type"] == ctype)
    return f"{cond['status']} {cond['reason']}"


def test_a_new_sweep_makes_trials_up_to_max_concurrent_and_writes_status_once(world: Any):
    w = world(a_sweep())
    assert w.ctl.reconcile(KEY) is None
    assert w.kube.kinds() == ["create", "create", "status"]
    assert sorted(w.kube.trials) == ["s-t0000", "s-t0001"]
    status = w.status()
    assert status["phase"] == "Running"
    assert status["trials"]["total"] == 3 and status["trials"]["created"] == 2
    assert reason_of(status, "Running") == "True Running"
    assert w.ctl.reconcile(KEY) is None
    assert w.kube.kinds() == ["create", "create", "status"]  # nothing changed: nothing written
    # The table lists the trials the reconcile started from: none, then both.
    assert [[t["trial"] for t in table["trials"]] for table in w.tables] == [
        [],
        ["s-t0000", "s-t0001"],
    ]
    assert w.tables[0]["at"] == "s3://b/p/ns/s/trials.json"
    w.ctl.reconcile(KEY)
    assert len(w.tables) == 2  # the same table is not written again


def test_a_finished_trial_gets_its_best_once_and_makes_room_for_the_next(world: Any):
    w = world(a_sweep())
    w.ctl.reconcile(KEY)
    w.rows["s-t0000"] = [
        {"training_iteration": 1, "score": 0.5},
        {"training_iteration": 2, "score": 0.9},
        {"training_iteration": 3, "score": 0.7},
    ]
    w.trial_is("s-t0000", phase="Succeeded", iteration=3, lastResult={"score": 0.7})
    w.kube.calls.clear()
    w.ctl.reconcile(KEY)
    best = [c for c in w.kube.calls if c[0] == "patch"]
    assert best == [
        (
            "patch",
            "s-t0000",
            {"metadata": {"annotations": {ANN_BEST: json.dumps({"value": 0.9, "iteration": 2})}}},
        )
    ]
    assert ("create", "s-t0002") in w.kube.calls
    assert w.status()["best"]["trial"] == "s-t0000"
    assert w.status()["best"]["value"] == 0.9
    w.kube.calls.clear()
    w.ctl.reconcile(KEY)
    assert "patch" not in w.kube.kinds()  # the best was read once


def test_a_trial_never_reporting_the_metric_is_named_in_the_status(world: Any):
    w = world(a_sweep())
    w.ctl.reconcile(KEY)
    w.rows["s-t0000"] = [{"training_iteration": 1, "loss": 0.5}]
    w.trial_is("s-t0000", phase="Succeeded", iteration=1)
    w.ctl.reconcile(KEY)
    cond = next(c for c in w.status()["conditions"] if c["type"] == "MetricMissing")
    assert cond["status"] == "True"
    assert "s-t0000 never reported 'score'" in cond["message"]


def test_a_scheduler_decision_is_written_onto_its_trial_before_anything_else(world: Any):
    w = world(a_sweep())
    w.ctl.reconcile(KEY)
    w.rows["s-t0000"] = [
        {"training_iteration": 1, "score": 0.5},
        {"training_iteration": 2, "score": 0.6},
    ]
    w.trial_is("s-t0000", phase="Running", iteration=2, lastResult={"score": 0.6})
    w.kube.calls.clear()
    assert w.ctl.reconcile(KEY) == 0.0  # decide the rest from the new state
    assert w.kube.kinds() == ["patch"]
    _, name, patch = w.kube.calls[0]
    assert name == "s-t0000"
    assert json.loads(patch["metadata"]["annotations"][ANN_DECISIONS]) == [[1, 1, 0.5, None]]
    assert "spec" not in patch  # the first at a rung continues
    w.kube.calls.clear()
    assert w.ctl.reconcile(KEY) == 0.0  # the next rung, replayed after the first
    _, _, patch = w.kube.calls[0]
    decisions = json.loads(patch["metadata"]["annotations"][ANN_DECISIONS])
    assert decisions == [[1, 1, 0.5, None], [2, 2, 0.6, None]]


def test_an_invalid_spec_fails_the_sweep_and_makes_no_trial(world: Any):
    w = world(a_sweep(jobTemplate={"spec": {"trainable": "m:T", "storage": {"uri": "/tmp"}}}))
    assert w.ctl.reconcile(KEY) is None
    assert w.kube.kinds() == ["status"]
    status = w.status()
    assert status["phase"] == "Failed"
    assert reason_of(status, "Failed") == "True InvalidSpec"
    assert w.ctl.reconcile(KEY) is None  # a finished sweep is left alone
    assert w.kube.kinds() == ["status"]


def test_too_many_failed_trials_stop_the_others_and_fail_the_sweep(world: Any):
    w = world(a_sweep(maxFailedTrials=0))
    w.ctl.reconcile(KEY)
    w.trial_is("s-t0000", phase="Failed", iteration=1)
    w.kube.calls.clear()
    w.ctl.reconcile(KEY)
    stops = [c for c in w.kube.calls if c[0] == "patch" and c[1] == "s-t0001"]
    assert stops == [
        (
            "patch",
            "s-t0001",
            {
                "metadata": {"annotations": {ANN_STOPPED: "the sweep failed"}},
                "spec": {"suspend": True},
            },
        )
    ]
    assert ("create", "s-t0002") not in w.kube.calls
    assert w.status()["phase"] == "Failed"
    assert reason_of(w.status(), "Failed") == "True MaxFailedTrials"


def test_a_suspended_sweep_pauses_its_trials_and_resumes_them(world: Any):
    w = world(a_sweep())
    w.ctl.reconcile(KEY)
    w.ctl.cache.put_sweep({**a_sweep(suspend=True), "status": w.status()})
    w.kube.calls.clear()
    w.ctl.reconcile(KEY)
    paused = {"metadata": {"annotations": {ANN_PAUSED: "true"}}, "spec": {"suspend": True}}
    assert [c for c in w.kube.calls if c[0] == "patch"] == [
        ("patch", "s-t0000", paused),
        ("patch", "s-t0001", paused),
    ]
    assert w.status()["phase"] == "Running"
    assert reason_of(w.status(), "Running") == "True Suspending"
    for name in ("s-t0000", "s-t0001"):
        w.trial_is(name, phase="Suspended")
    w.ctl.reconcile(KEY)
    assert w.status()["phase"] == "Suspended"
    w.ctl.cache.put_sweep({**a_sweep(), "status": w.status()})
    w.kube.calls.clear()
    w.ctl.reconcile(KEY)
    resumed = {"metadata": {"annotations": {ANN_PAUSED: None}}, "spec": {"suspend": False}}
    assert [c for c in w.kube.calls if c[0] == "patch"] == [
        ("patch", "s-t0000", resumed),
        ("patch", "s-t0001", resumed),
    ]


def test_a_status_conflict_looks_again_shortly(world: Any):
    w = world(a_sweep())
    w.kube.conflict = True
    w.ctl.reconcile(KEY)
    assert "status" not in w.kube.kinds()
    assert w.ctl.queue.depth() == 1  # scheduled again, after a short wait
    assert w.ctl.queue.get(timeout=0) is None


def test_a_forgotten_sweep_writes_its_table_again(world: Any):
    w = world(a_sweep())
    w.ctl.reconcile(KEY)
    w.ctl.reconcile(KEY)
    assert len(w.tables) == 2
    w.ctl.forget(KEY)
    w.ctl.cache.put_sweep({**a_sweep(), "status": w.status()})
    w.ctl.reconcile(KEY)
    assert len(w.tables) == 3
