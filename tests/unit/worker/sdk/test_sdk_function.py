"""The function API: report / get_checkpoint / get_context under `kubetune.run`."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from typing import Any

import pytest

import kubetune
import kubetune_contract as contract
from kubetune.runtime.signals import StopSignals

# Temporary folders the SDK makes land in each test's tmp_path.
pytestmark = pytest.mark.usefixtures("own_tmp")


def go(tmp_path, fn, folder="run", **kw):
    kw.setdefault("verbose", 0)
    kw.setdefault("raise_on_failure", False)
    return kubetune.run(fn, storage=str(tmp_path / folder), **kw)


def results(tmp_path, folder="run"):
    with open(tmp_path / folder / contract.RESULT_FILE) as f:
        return [json.loads(line) for line in f]


def write_state(step):
    tmp = tempfile.mkdtemp()
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump({"step": step}, f)
    return tmp


def counting(config):
    """Reports `step`, checkpointing every `every` steps; resumes from its checkpoint."""
    start = 0
    ck = kubetune.get_checkpoint()
    if ck is not None:
        with ck.as_directory() as d, open(os.path.join(d, "state.json")) as f:
            start = json.load(f)["step"] + 1
    for step in range(start, config.get("steps", 10)):
        if config.get("every") and step % config["every"] == config["every"] - 1:
            folder = write_state(step)
            kubetune.report({"step": step}, checkpoint=kubetune.Checkpoint.from_directory(folder))
        else:
            kubetune.report({"step": step})


def test_each_report_is_one_iteration_with_rays_keys(tmp_path):
    out = go(tmp_path, counting, config={"steps": 4})
    rows = results(tmp_path)
    assert [r["training_iteration"] for r in rows] == [1, 2, 3, 4]
    assert set(rows[0]) == {
        "step",
        "checkpoint_dir_name",
        "config",
        "date",
        "done",
        "hostname",
        "iterations_since_restore",
        "node_ip",
        "pid",
        "time_since_restore",
        "time_this_iter_s",
        "time_total_s",
        "timestamp",
        "training_iteration",
        "trial_id",
    }
    assert rows[0]["checkpoint_dir_name"] is None
    # The function returned: its last result is replayed with done=True, not logged again.
    assert out.ok and out.metrics["done"] is True and rows[-1]["done"] is False
    assert "returned" in out.message


def test_reported_checkpoints_are_committed_before_report_returns(tmp_path):
    seen = []

    def fn(config):
        for step in range(3):
            folder = write_state(step)
            kubetune.report({"step": step}, checkpoint=kubetune.Checkpoint.from_directory(folder))
            latest = kubetune.get_checkpoint()
            assert latest is not None
            seen.append(latest.path)
            os.remove(os.path.join(folder, "state.json"))  # safe: already persisted

    out = go(tmp_path, fn)
    run = str(tmp_path / "run")
    assert seen == [f"{run}/checkpoint_00000{i}" for i in (1, 2, 3)]
    rows = results(tmp_path)
    assert rows[1]["checkpoint_dir_name"] == "checkpoint_000002"
    assert rows[1]["should_checkpoint"] is True
    assert out.checkpoint.path == f"{run}/checkpoint_000003"
    with open(os.path.join(out.checkpoint.path, "state.json")) as f:
        assert json.load(f) == {"step": 2}


def test_stop_criteria_end_the_function(tmp_path):
    out = go(tmp_path, counting, config={"steps": 100}, stop={"step": 6})
    assert out.ok and out.metrics["training_iteration"] == 7 and out.metrics["done"] is True
    assert results(tmp_path)[-1]["done"] is True


def test_resume_gives_the_function_its_checkpoint(tmp_path):
    go(tmp_path, counting, config={"steps": 7, "every": 3})  # checkpoints at iterations 3, 6
    out = go(tmp_path, counting, config={"steps": 9, "every": 3})
    rows = results(tmp_path)
    # The resumed run's iteration 7 replaces the first run's: each iteration once.
    assert [r["training_iteration"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert [r["step"] for r in rows[6:]] == [6, 7, 8]
    assert rows[6]["iterations_since_restore"] == 1
    assert out.restored_from.endswith("checkpoint_000006")


def test_returned_value_is_reported():
    def fn(config):
        kubetune.report({"a": 1})
        return 7

    with tempfile.TemporaryDirectory() as tmp:
        out = kubetune.run(fn, storage=tmp, verbose=0)
    metrics = out.metrics or {}
    assert metrics["_metric"] == 7 and metrics["training_iteration"] == 2
    assert metrics["done"] is True


def test_a_generator_function(tmp_path):
    def fn(config):
        for i in range(3):
            yield {"i": i}

    out = go(tmp_path, fn)
    assert [r["i"] for r in results(tmp_path)] == [0, 1, 2] and out.ok


def test_returning_a_string_is_a_bad_trainable(tmp_path):
    out = go(tmp_path, lambda config: "nope")
    assert out.exit_code == contract.EXIT_BAD_TRAINABLE and "dict or a number" in out.message


def test_function_failure_retries_from_its_checkpoint(tmp_path):
    marker = tmp_path / "failed"

    def flaky(config):
        if kubetune.get_checkpoint() is None and not marker.exists():
            for step in range(4):
                ck = kubetune.Checkpoint.from_directory(write_state(step)) if step == 2 else None
                kubetune.report({"step": step}, checkpoint=ck)
            marker.touch()
            raise RuntimeError("lost the GPU")
        counting({"steps": 6})

    out = go(tmp_path, flaky, max_failures=1)
    assert out.ok and out.failures == 1
    assert [r["training_iteration"] for r in results(tmp_path)][-3:] == [4, 5, 6]


def test_context_and_config_copy(tmp_path):
    seen: dict[str, Any] = {}

    def fn(config):
        config["mutated"] = True
        ctx = kubetune.get_context()
        seen.update(
            name=ctx.get_trial_name(),
            id=ctx.get_trial_id(),
            dir=ctx.get_trial_dir(),
            storage=ctx.get_storage(),
            exp=ctx.get_experiment_name(),
            stop=ctx.stop_requested(),
        )
        kubetune.report({"x": 1})

    out = go(tmp_path, fn, config={"lr": 1}, name="job-a", run_id="uid-1")
    assert seen["name"] == seen["exp"] == "job-a" and seen["id"] == "uid-1"
    assert seen["storage"] == str(tmp_path / "run") and os.path.isdir(seen["dir"])
    assert seen["stop"] is False
    assert out.metrics["config"] == {"lr": 1}  # the function got a copy


def test_outside_a_run_report_and_get_checkpoint_warn_and_do_nothing():
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        kubetune.report({"a": 1})
        assert kubetune.get_checkpoint() is None
    assert kubetune.get_context().get_trial_id() == "default"


def test_report_rejects_bad_input(tmp_path):
    def fn(config):
        kubetune.report([1, 2])  # type: ignore[arg-type]

    out = go(tmp_path, fn)
    assert out.exit_code == contract.EXIT_TRAINABLE_ERROR and "dict of metrics" in out.message


def test_stop_request_with_a_checkpoint_at_that_report(tmp_path):
    signals = StopSignals()

    def cooperative(config):
        for step in range(100):
            if step == 3:
                signals.request("SIGTERM")
            ck = None
            if kubetune.get_context().stop_requested():
                ck = kubetune.Checkpoint.from_directory(write_state(step))
            kubetune.report({"step": step}, checkpoint=ck)

    out = go(tmp_path, cooperative, signals=signals)
    assert out.exit_code == contract.EXIT_STOPPED
    assert out.checkpoint.path.endswith("checkpoint_000004")


def test_stop_request_without_a_checkpoint_is_unsaved(tmp_path):
    signals = StopSignals()

    def fn(config):
        for step in range(100):
            if step == 5:
                signals.request("SIGTERM")
            ck = kubetune.Checkpoint.from_directory(write_state(step)) if step == 1 else None
            kubetune.report({"step": step}, checkpoint=ck)

    out = go(tmp_path, fn, signals=signals)
    assert out.exit_code == contract.EXIT_STOP_UNSAVED
    assert "checkpoint_000002" in out.message and out.metrics["training_iteration"] == 6


def test_frequency_for_a_function_is_ignored_with_a_notice(tmp_path):
    out = go(tmp_path, counting, config={"steps": 4}, checkpoint={"frequency": 1, "at_end": True})
    assert out.ok and out.checkpoints == []


@pytest.mark.parametrize("fn", [lambda: None, lambda a, b: None], ids=["no-arg", "two-args"])
def test_function_signature_is_checked(tmp_path, fn):
    with pytest.raises(kubetune.InvalidTrainable, match="one positional argument"):
        go(tmp_path, fn)
