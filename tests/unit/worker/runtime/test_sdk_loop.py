"""`kubetune.run`: stop criteria, checkpoint policy, resume and restore, retries,
signals and the files the loop writes (result.json, params.json, progress)."""

from __future__ import annotations

import json
import logging
import os

import pytest

import kubetune
import kubetune_contract as contract
from kubetune import Trainable
from kubetune.runtime.signals import StopSignals
from kubetune.storage import open_storage
from kubetune.storage.runfolder import RunStore

# Temporary folders the SDK makes land in each test's tmp_path.
pytestmark = pytest.mark.usefixtures("own_tmp")


class Model(Trainable):
    """score follows config["scores"] (by iteration) or equals the iteration."""

    def setup(self, config):
        self.value = 0
        self.scores = config.get("scores")
        self.fail_at = config.get("fail_at", [])
        self.marker = config.get("marker")

    def step(self):
        self.value += 1
        it = self.iteration + 1
        if it in self.fail_at and self.marker and not os.path.exists(f"{self.marker}{it}"):
            open(f"{self.marker}{it}", "w").close()  # fail once per listed iteration
            raise RuntimeError(f"boom at {it}")
        score = self.scores[it - 1] if self.scores else it
        return {"score": score, "nested": {"acc": it / 10}, "value": self.value}

    def save_checkpoint(self, checkpoint_dir):
        return {"value": self.value}

    def load_checkpoint(self, checkpoint):
        self.value = checkpoint["value"]


def go(tmp_path, trainable=Model, folder="run", **kw):
    kw.setdefault("verbose", 0)
    kw.setdefault("raise_on_failure", False)
    return kubetune.run(trainable, storage=str(tmp_path / folder), **kw)


def results(tmp_path, folder="run"):
    with open(tmp_path / folder / contract.RESULT_FILE) as f:
        return [json.loads(line) for line in f]


def progress(tmp_path, folder="run"):
    return json.loads((tmp_path / folder / contract.PROGRESS_FILE).read_text())


def kept(tmp_path, folder="run"):
    store = RunStore(open_storage(str(tmp_path / folder)))
    return [c.iteration for c in store.list_checkpoints()]


# --- stop criteria ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop", "last"),
    [
        ({"training_iteration": 5}, 5),
        ({"score": 3}, 3),
        ({"nested/acc": 0.4}, 4),
        ({"training_iteration": 9, "score": 2}, 2),  # any criterion stops
        (lambda trial_id, result: result["score"] >= 6, 6),
    ],
    ids=["iteration", "metric", "flattened", "any", "callable"],
)
def test_stop_criteria(tmp_path, stop, last):
    out = go(tmp_path, stop=stop, checkpoint={"at_end": False})
    assert out.ok and out.metrics["training_iteration"] == last
    rows = results(tmp_path)
    assert [r["training_iteration"] for r in rows] == list(range(1, last + 1))
    assert rows[-1]["done"] is True and not any(r["done"] for r in rows[:-1])


def test_done_from_the_trainable_stops(tmp_path):
    class Done(Model):
        def step(self):
            return {"done": self.iteration == 2}

    assert go(tmp_path, Done).metrics["training_iteration"] == 3


def test_a_misspelt_stop_key_fails_at_the_first_result_naming_the_keys(tmp_path):
    out = go(tmp_path, stop={"training_iterations": 3})
    assert out.state == "failed" and out.exit_code == contract.EXIT_USAGE
    assert out.reason == "InvalidSettings" and out.iteration == 0
    assert "stop criterion 'training_iterations' is not in the first result" in out.message
    assert "did you mean 'training_iteration'?" in out.message
    assert "nested/acc" in out.message and "score" in out.message  # the keys it has


def test_any_missing_stop_key_fails_even_beside_a_good_one(tmp_path):
    out = go(tmp_path, stop={"no_such_metric": 1, "training_iteration": 4})
    assert out.exit_code == contract.EXIT_USAGE and "'no_such_metric'" in out.message


def test_a_stop_key_dropped_after_the_first_result_warns_once(tmp_path, caplog):
    class Sometimes(Model):
        def step(self):
            result = super().step()
            if self.iteration % 2:  # only the odd iterations carry "value"
                del result["value"]
            return result

    with caplog.at_level(logging.WARNING, logger="kubetune"):
        out = go(tmp_path, Sometimes, stop={"value": 5})
    assert out.ok and out.metrics["training_iteration"] == 5
    warnings = [r.getMessage() for r in caplog.records if "'value'" in r.getMessage()]
    assert len(warnings) == 1


def test_a_function_with_a_misspelt_stop_key_fails(tmp_path):
    def train(config):
        for i in range(10_000):
            kubetune.report({"loss": 1.0 / (i + 1)})

    out = go(tmp_path, train, stop={"los": 0.5})
    assert out.exit_code == contract.EXIT_USAGE and out.iteration <= 1
    assert "did you mean 'loss'?" in out.message


def test_a_score_attribute_missing_from_the_first_checkpoint_fails_keeping_it(tmp_path):
    out = go(
        tmp_path,
        stop={"training_iteration": 10},
        checkpoint={"frequency": 2, "num_to_keep": 1, "score_attribute": "acc"},
    )
    assert out.exit_code == contract.EXIT_USAGE and out.iteration == 2
    assert "checkpoint score attribute 'acc' is not in the first checkpoint's result" in (
        out.message
    )
    assert "did you mean 'nested/acc'?" in out.message
    assert [c.iteration for c in out.checkpoints] == [2]  # saved before the run ended


def test_a_nested_score_attribute_is_found(tmp_path):
    out = go(
        tmp_path,
        stop={"training_iteration": 4},
        checkpoint={"frequency": 1, "num_to_keep": 1, "score_attribute": "nested/acc"},
    )
    assert out.ok and out.best_checkpoint is not None


def test_a_stopper_object(tmp_path):
    class AfterThree(kubetune.Stopper):
        def __init__(self):
            self.calls = 0

        def __call__(self, trial_id, result):
            self.calls += 1
            return self.calls >= 3

    assert go(tmp_path, stop=AfterThree()).metrics["training_iteration"] == 3


@pytest.mark.parametrize("stop", [{"a": {"b": 1}}, {"a": "high"}, 42])
def test_bad_stop_criteria_are_refused(tmp_path, stop):
    with pytest.raises(kubetune.InvalidSettings):
        go(tmp_path, stop=stop)


# --- what the loop writes --------------------------------------------------------------


def test_every_result_is_persisted_and_params_written(tmp_path):
    config = {"lr": 0.1, "layers": [1, 2]}
    go(tmp_path, config=config, stop={"training_iteration": 50})
    rows = results(tmp_path)
    assert len(rows) == 50 and rows[10]["config"] == config
    assert json.loads((tmp_path / "run" / contract.PARAMS_FILE).read_text()) == config


def test_progress_file_shape(tmp_path):
    out = go(
        tmp_path,
        stop={"training_iteration": 24},
        checkpoint={"frequency": 2, "score_attribute": "score"},
        config={"big": "x" * 1000},
    )
    doc = progress(tmp_path)
    assert set(doc) >= {
        "run_id",
        "state",
        "reason",
        "message",
        "iteration",
        "last_result",
        "updated",
        "latest_checkpoint",
        "best_checkpoint",
        "checkpoints",
        "restored_from",
    }
    assert doc["state"] == "completed" and doc["reason"] == "Completed"
    assert doc["iteration"] == 24 and doc["run_id"] == out.metrics["trial_id"]
    assert doc["last_result"]["training_iteration"] == 24
    assert doc["last_result"]["nested/acc"] == 2.4 and "config" not in doc["last_result"]
    assert len(doc["last_result"]) <= 30
    assert all(not isinstance(v, dict | list) for v in doc["last_result"].values())
    assert doc["latest_checkpoint"]["iteration"] == 24
    assert doc["latest_checkpoint"]["path"].endswith("checkpoint_000024")
    assert doc["best_checkpoint"]["iteration"] == 24
    assert len(doc["checkpoints"]) == 10 and doc["checkpoints"][-1]["iteration"] == 24
    assert doc["restored_from"] is None


def test_last_result_caps_keys_and_strings(tmp_path):
    class Wide(Model):
        def step(self):
            return {**{f"m{i:02d}": i for i in range(40)}, "text": "y" * 1000, "nan": float("nan")}

    go(tmp_path, Wide, stop={"training_iteration": 1})
    last = progress(tmp_path)["last_result"]
    assert len(last) == 30 and next(iter(last)) == "training_iteration"
    assert "m00" in last
    wide = go(tmp_path, Wide, folder="run2", stop={"training_iteration": 1}).metrics
    from kubetune.runtime.progress_builder import scalar_result

    small = scalar_result({"text": "y" * 1000, "nan": float("nan")})
    assert small == {"text": "y" * 256, "nan": "NaN"}
    assert wide["text"] == "y" * 1000  # the result itself is untouched


# --- checkpoint policy -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("checkpoint", "expected"),
    [
        ({"frequency": 3}, [3, 6, 9, 10]),  # at_end defaults to True for a class
        ({"frequency": 3, "at_end": False}, [3, 6, 9]),
        ({"at_end": True}, [10]),
        ({"frequency": 0, "at_end": False}, []),
    ],
    ids=["freq-and-end", "freq-only", "end-only", "none"],
)
def test_checkpoint_frequency_and_at_end(tmp_path, checkpoint, expected):
    out = go(tmp_path, stop={"training_iteration": 10}, checkpoint=checkpoint)
    assert kept(tmp_path) == expected
    assert [c.iteration for c in out.checkpoints] == expected


def test_should_checkpoint_forces_a_save(tmp_path):
    class Asks(Model):
        def step(self):
            return {"should_checkpoint": self.iteration + 1 == 3}

    go(tmp_path, Asks, stop={"training_iteration": 5}, checkpoint={"at_end": False})
    assert kept(tmp_path) == [3]


def test_keep_n_by_score_never_prunes_latest_or_best(tmp_path):
    scores = [1, 9, 2, 8, 3, 7, 4, 5, 0, 6]  # best at iteration 2, latest 10
    out = go(
        tmp_path,
        config={"scores": scores},
        stop={"training_iteration": 10},
        checkpoint={"frequency": 1, "num_to_keep": 2, "score_attribute": "score"},
    )
    assert kept(tmp_path) == [2, 4, 10]  # top 2 by score (9, 8) plus the latest
    assert out.best_checkpoint.path.endswith("checkpoint_000002")
    assert out.checkpoint.path.endswith("checkpoint_000010")
    assert progress(tmp_path)["best_checkpoint"]["iteration"] == 2


def test_keep_n_by_min_score(tmp_path):
    go(
        tmp_path,
        config={"scores": [5, 1, 4, 2, 3]},
        stop={"training_iteration": 5},
        checkpoint={
            "frequency": 1,
            "num_to_keep": 1,
            "score_attribute": "score",
            "score_order": "min",
        },
    )
    assert kept(tmp_path) == [2, 5]


def test_keep_n_by_recency(tmp_path):
    go(tmp_path, stop={"training_iteration": 6}, checkpoint={"frequency": 1, "num_to_keep": 2})
    assert kept(tmp_path) == [5, 6]


@pytest.mark.parametrize(
    "bad", [{"num_to_keep": 0}, {"score_order": "up"}, {"frequency": -1}, {"often": 1}]
)
def test_bad_checkpoint_settings(tmp_path, bad):
    with pytest.raises(kubetune.InvalidSettings):
        go(tmp_path, checkpoint=bad)


# --- resume, restore, retries ----------------------------------------------------------


def test_resume_from_the_runs_latest_checkpoint(tmp_path):
    go(tmp_path, stop={"training_iteration": 10}, checkpoint={"frequency": 5})
    out = go(tmp_path, stop={"training_iteration": 15}, checkpoint={"frequency": 5})
    rows = results(tmp_path)
    assert [r["training_iteration"] for r in rows] == list(range(1, 16))
    assert rows[10]["iterations_since_restore"] == 1 and rows[10]["value"] == 11
    assert out.restored_from.endswith("checkpoint_000010")
    assert progress(tmp_path)["restored_from"] == out.restored_from


def test_resume_when_the_goal_was_already_reached_trains_no_more(tmp_path):
    go(tmp_path, stop={"training_iteration": 4})
    out = go(tmp_path, stop={"training_iteration": 4})
    assert out.ok and "already reached" in out.message
    assert len(results(tmp_path)) == 4


def test_restore_from_another_runs_checkpoint(tmp_path):
    go(tmp_path, folder="old", stop={"training_iteration": 12}, checkpoint={"frequency": 5})
    src = str(tmp_path / "old" / "checkpoint_000010")
    out = go(tmp_path, folder="new", restore_from=src, stop={"training_iteration": 13})
    rows = results(tmp_path, "new")
    assert [r["training_iteration"] for r in rows] == [11, 12, 13]
    assert rows[0]["value"] == 11 and out.restored_from == src


def test_restore_from_a_missing_checkpoint(tmp_path):
    out = go(tmp_path, restore_from=str(tmp_path / "nope" / "checkpoint_000001"))
    assert out.exit_code == contract.EXIT_BAD_CHECKPOINT and "does not exist" in out.message
    assert progress(tmp_path)["state"] == "failed"


def test_a_checkpoint_that_fails_to_load(tmp_path):
    go(tmp_path, folder="old", stop={"training_iteration": 2})

    class Incompatible(Model):
        def load_checkpoint(self, checkpoint):
            raise KeyError("weights")

    out = go(tmp_path, Incompatible, restore_from=str(tmp_path / "old" / "checkpoint_000002"))
    assert out.exit_code == contract.EXIT_BAD_CHECKPOINT
    assert "fails to load: KeyError" in out.message


def test_retry_from_the_latest_checkpoint(tmp_path):
    out = go(
        tmp_path,
        config={"fail_at": [7], "marker": str(tmp_path / "m")},
        stop={"training_iteration": 10},
        checkpoint={"frequency": 5},
        max_failures=1,
    )
    assert out.ok and out.failures == 1
    assert out.metrics["training_iteration"] == 10 and out.metrics["iterations_since_restore"] == 5
    assert out.metrics["value"] == 10  # the model state came back from checkpoint_000005
    assert progress(tmp_path)["failures"] == 1


@pytest.mark.parametrize(
    ("max_failures", "fail_at", "ok"),
    [(0, [3], False), (-1, [2, 3, 4], True), (2, [2, 3, 4], False), (3, [2, 3, 4], True)],
)
def test_max_failures(tmp_path, max_failures, fail_at, ok):
    out = go(
        tmp_path,
        config={"fail_at": fail_at, "marker": str(tmp_path / "m")},
        stop={"training_iteration": 5},
        max_failures=max_failures,
    )
    assert out.ok is ok
    if not ok:
        assert out.exit_code == contract.EXIT_TRAINABLE_ERROR
        assert "RuntimeError: boom" in out.message and isinstance(out.error, RuntimeError)
        assert progress(tmp_path)["reason"] == "TrainableError"


def test_failure_raises_by_default(tmp_path):
    with pytest.raises(kubetune.RunFailed) as info:
        kubetune.run(
            Model,
            storage=str(tmp_path / "r"),
            verbose=0,
            config={"fail_at": [1], "marker": str(tmp_path / "m")},
        )
    assert info.value.result.exit_code == contract.EXIT_TRAINABLE_ERROR


def test_step_returning_a_non_dict(tmp_path):
    class Bad(Model):
        def step(self):
            return [1]

    out = go(tmp_path, Bad, max_failures=3)
    assert out.exit_code == contract.EXIT_BAD_TRAINABLE and out.failures == 0
    assert "step() needs to return a dict" in out.message


def test_another_runs_folder_is_refused_and_left_alone(tmp_path):
    go(tmp_path, run_id="uid-a", stop={"training_iteration": 2})
    before = (tmp_path / "run" / contract.PROGRESS_FILE).read_text()
    out = go(tmp_path, run_id="uid-b", stop={"training_iteration": 2})
    assert out.exit_code == contract.EXIT_RUN_CONFLICT and "uid-a" in out.message
    assert (tmp_path / "run" / contract.PROGRESS_FILE).read_text() == before


# --- stop requests (the in-process half of SIGTERM) --------------------------------------


def _stopping(signals, at):
    class StopsItself(Model):
        def step(self):
            if self.iteration + 1 == at:
                signals.request("SIGTERM")
            return super().step()

    return StopsItself


def test_stop_request_finishes_the_step_and_saves(tmp_path):
    signals = StopSignals()
    out = go(tmp_path, _stopping(signals, 4), signals=signals, checkpoint={"frequency": 10})
    assert out.exit_code == contract.EXIT_STOPPED and out.state == "stopped"
    assert kept(tmp_path) == [4] and results(tmp_path)[-1]["training_iteration"] == 4
    doc = progress(tmp_path)
    assert doc["state"] == "stopped" and doc["reason"] == "StoppedWithCheckpoint"
    out = go(tmp_path, stop={"training_iteration": 6})  # and resumes from it
    assert [r["training_iteration"] for r in results(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_stop_request_when_saving_fails(tmp_path):
    signals = StopSignals()

    class CannotSave(_stopping(signals, 2)):  # type: ignore[misc]
        def save_checkpoint(self, checkpoint_dir):
            raise OSError("disk full")

    out = go(tmp_path, CannotSave, signals=signals)
    assert out.exit_code == contract.EXIT_STOP_UNSAVED
    assert "disk full" in out.message and progress(tmp_path)["state"] == "stopped"


def test_a_class_without_save_checkpoint(tmp_path):
    class NoSave(Trainable):
        def step(self):
            return {"a": 1}

    out = go(tmp_path, NoSave, stop={"training_iteration": 3})
    assert out.ok and out.checkpoints == []  # no at-end checkpoint it cannot make
    with pytest.raises(kubetune.InvalidTrainable, match="does not implement save_checkpoint"):
        go(tmp_path, NoSave, folder="r2", checkpoint={"frequency": 2})


def test_context_in_a_class_trainable(tmp_path):
    signals = StopSignals()
    seen = []

    class Polls(Model):
        def step(self):
            ctx = kubetune.get_context()
            seen.append((ctx.get_trial_id(), ctx.stop_requested()))
            signals.request("SIGTERM")  # as if it arrived during this step
            seen.append((ctx.get_trial_id(), ctx.stop_requested()))
            return super().step()

    out = go(tmp_path, Polls, signals=signals, run_id="uid-9")
    assert seen == [("uid-9", False), ("uid-9", True)] and out.exit_code == contract.EXIT_STOPPED
    assert kept(tmp_path) == [1]

    class Reports(Model):
        def step(self):
            kubetune.report({"x": 1})
            return {}

    out = go(tmp_path, Reports, folder="r2")
    assert out.exit_code == contract.EXIT_TRAINABLE_ERROR and "training functions" in out.message
