"""The class API's contract (Ray Tune's Trainable), method by method and key by key."""

from __future__ import annotations

import os
import re
import time

import pytest

import kubetune
import kubetune_contract as contract
from kubetune import Checkpoint, Trainable, TrainingResult
from kubetune.sdk.errors import StepResultError
from kubetune.testing import validate_save_restore

# Temporary folders the SDK makes land in each test's tmp_path.
pytestmark = pytest.mark.usefixtures("own_tmp")


class Counter(Trainable):
    def setup(self, config):
        self.seen_config = config
        self.value = config.get("start", 0)
        self.iteration_seen_in_step: list[int] = []
        self.extra = config.get("extra", {})
        self.cleaned = False

    def step(self):
        self.iteration_seen_in_step.append(self.iteration)
        self.value += 1
        return {"value": self.value, **self.extra}

    def save_checkpoint(self, checkpoint_dir):
        return {"value": self.value}

    def load_checkpoint(self, checkpoint):
        self.loaded = checkpoint
        self.value = checkpoint["value"]

    def cleanup(self):
        self.cleaned = True


class DirCounter(Counter):
    def save_checkpoint(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "value.txt"), "w") as f:
            f.write(str(self.value))

    def load_checkpoint(self, checkpoint):
        self.loaded = checkpoint
        with open(os.path.join(checkpoint, "value.txt")) as f:
            self.value = int(f.read())


class Scripted(Trainable):
    """step() returns what the test queued."""

    def setup(self, config):
        self.queue = list(config.get("results", []))

    def step(self):
        return self.queue.pop(0) if self.queue else {}


def test_constructor_keeps_the_callers_dict_and_pops_magic_keys():
    from kubetune.sdk.result_keys import TrialInfo

    config = {
        "start": 5,
        "__trial_info__": TrialInfo(trial_id="t1", trial_name="n1"),
        "__stdout_file__": "out",
        "__stderr_file__": "err",
    }
    t = Counter(config)
    assert t.config is config
    assert set(config) == {"start"}
    assert t.trial_id == "t1" and t.trial_name == "n1"
    assert t.seen_config == {"start": 5} and t.seen_config is not config  # a deep copy
    assert os.path.isdir(t.logdir)


def test_outside_a_run_trial_id_and_name_are_default():
    t = Counter()
    assert (t.trial_id, t.trial_name, t.trial_resources) == ("default", "default", None)


def test_auto_filled_keys_and_iteration_inside_step():
    config = {"start": 0}
    t = Counter(config)
    r1, r2 = t.train(), t.train()
    assert t.iteration_seen_in_step == [0, 1]
    expected = {
        "value",
        "done",
        "training_iteration",
        "trial_id",
        "date",
        "timestamp",
        "time_this_iter_s",
        "time_total_s",
        "pid",
        "hostname",
        "node_ip",
        "config",
        "time_since_restore",
        "iterations_since_restore",
    }
    assert set(r2) == expected
    assert r2["training_iteration"] == 2 == t.iteration == t.training_iteration
    assert r2["done"] is False
    assert r2["config"] is t.config
    assert r2["pid"] == os.getpid()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", r2["date"])
    assert abs(r2["timestamp"] - time.time()) < 5 and isinstance(r2["timestamp"], int)
    assert r2["time_total_s"] == pytest.approx(r1["time_this_iter_s"] + r2["time_this_iter_s"])
    assert r2["iterations_since_restore"] == 2
    assert "timesteps_total" not in r2 and "timesteps_since_restore" not in r2


def test_user_values_win_or_lose_by_rays_rules():
    t = Scripted(
        {
            "results": [
                {
                    "training_iteration": 42,
                    "time_total_s": 999,
                    "time_this_iter_s": 2.5,
                    "timestamp": 123,
                    "done": True,
                },
                {"time_this_iter_s": None, "timestamp": 0},
            ]
        }
    )
    r1 = t.train()
    assert r1["training_iteration"] == 42 and t.iteration == 1  # setdefault: user wins
    assert r1["time_total_s"] == 2.5  # overwritten with the sum of the user's times
    assert r1["timestamp"] == 123  # truthy user value kept
    assert r1["done"] is True
    r2 = t.train()
    assert r2["training_iteration"] == 2
    assert r2["time_this_iter_s"] is not None and r2["time_this_iter_s"] < 1  # None -> measured
    assert r2["timestamp"] > 123  # 0 replaced
    assert r2["time_total_s"] == pytest.approx(2.5 + r2["time_this_iter_s"])


def test_timesteps_and_episodes_totals():
    t = Scripted(
        {
            "results": [
                {},
                {"timesteps_this_iter": 0},
                {"timesteps_this_iter": 5, "episodes_this_iter": 2},
                {"timesteps_total": 7},
            ]
        }
    )
    r = t.train()
    assert "timesteps_total" not in r and "episodes_total" not in r
    r = t.train()
    assert r["timesteps_total"] == 0  # a 0 counts: the total now exists
    assert "timesteps_since_restore" not in r  # only when truthy
    r = t.train()
    assert (r["timesteps_total"], r["episodes_total"], r["timesteps_since_restore"]) == (5, 2, 5)
    r = t.train()
    assert r["timesteps_total"] == 7  # a user total passes through


def test_step_result_is_copied_not_mutated():
    shared = {"x": 1}
    t = Scripted({"results": [shared]})
    r = t.train()
    assert shared == {"x": 1} and r is not shared


def test_duplicate_result_is_returned_unchanged():
    dup = {"__duplicate__": True}
    t = Scripted({"results": [dup]})
    r = t.train()
    assert r == dup and set(r) == {"__duplicate__"} and t.iteration == 0


def test_step_must_return_a_dict():
    class Bad(Trainable):
        def step(self):
            return 3

    with pytest.raises(AssertionError, match=r"step\(\) needs to return a dict.*returned int"):
        Bad().train()
    assert issubclass(StepResultError, AssertionError)


def test_train_buffered_stops_by_time_length_and_done():
    assert len(Counter().train_buffered(0, 3)) == 1
    assert len(Counter().train_buffered(100, 3)) == 3
    t = Scripted({"results": [{}, {}, {}, {}, {"done": True}, {}]})
    assert len(t.train_buffered(100)) == 5
    t = Scripted({"results": [{}, {"should_checkpoint": True}, {}]})
    assert len(t.train_buffered(100)) == 2


def test_dict_checkpoint_round_trip_continues_the_iteration(tmp_path):
    t = Counter()
    for _ in range(3):
        t.train()
    saved = t.save(str(tmp_path / "a" / "b"))  # a nested dir is created
    assert isinstance(saved, TrainingResult)
    assert os.path.exists(tmp_path / "a" / "b" / "_dict_checkpoint.pkl")
    assert saved.metrics["training_iteration"] == 3
    t2 = Counter()
    t2.restore(saved)
    assert t2.loaded == {"value": 3}
    r = t2.train()
    assert r["training_iteration"] == 4 and r["iterations_since_restore"] == 1
    assert r["value"] == 4
    assert r["time_since_restore"] < r["time_total_s"]


def test_directory_checkpoint_and_restore_of_a_plain_folder_restarts_the_count(tmp_path):
    t = DirCounter()
    t.train()
    t.train()
    saved = t.save()
    assert saved.checkpoint is not None
    assert os.path.exists(os.path.join(saved.checkpoint.path, "value.txt"))
    plain = saved.checkpoint.to_directory(str(tmp_path / "copy"))  # the manifest stays behind
    t2 = DirCounter()
    t2.restore(plain)  # a folder without a manifest: Ray 2.60 restarts the count at 0
    assert isinstance(t2.loaded, str) and t2.value == 2
    assert t2.train()["training_iteration"] == 1


def test_save_before_train_has_empty_metrics_and_keeps_extra_files(tmp_path):
    class Both(Counter):
        def save_checkpoint(self, checkpoint_dir):
            with open(os.path.join(checkpoint_dir, "extra.bin"), "wb") as f:
                f.write(b"x")
            return {"v": 1}

    saved = Both().save(str(tmp_path / "ck"))
    assert saved.metrics == {}
    assert sorted(os.listdir(tmp_path / "ck")) == [
        contract.CHECKPOINT_MANIFEST,
        "_dict_checkpoint.pkl",
        "extra.bin",
    ]


def test_save_checkpoint_returning_another_path_is_an_error(tmp_path):
    class Wrong(Counter):
        def save_checkpoint(self, checkpoint_dir):
            return os.path.join(checkpoint_dir, "sub")

    class Same(Counter):
        def save_checkpoint(self, checkpoint_dir):
            return checkpoint_dir

    with pytest.raises(ValueError, match="must be None or the same"):
        Wrong().save(str(tmp_path / "w"))
    same = Same().save(str(tmp_path / "s")).checkpoint
    assert same is not None and same.path == str(tmp_path / "s")


def test_restore_of_a_missing_folder_fails(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        Counter().restore(str(tmp_path / "nope"))


def test_reset_false_switches_config_but_keeps_counters():
    t = Counter({"start": 1})
    t.train()
    t.train()
    old_logdir = t.logdir
    new = {"start": 9}
    assert t.reset(new) is False
    assert t.config is new and t.iteration == 2 and t.logdir != old_logdir


def test_reset_true_zeroes_counters_without_setup():
    class Reusable(Counter):
        def reset_config(self, new_config):
            self.reconfigured = new_config
            return True

    t = Reusable({"start": 1})
    t.train()
    last = t._last_result
    assert t.reset({"start": 5}) is True
    assert t.iteration == 0 and t.value == 2  # setup() not called again
    assert t._last_result is last
    assert t.train()["training_iteration"] == 1


def test_stop_export_state_and_debug_metrics():
    class Exporting(Counter):
        def _export_model(self, export_formats, export_dir):
            return {"formats": export_formats, "dir": export_dir}

    t = Exporting()
    t.train()
    assert t.export_model("onnx") == {"formats": ["onnx"], "dir": t.logdir}
    assert Counter().export_model(["x"]) == {}
    assert set(t.get_state()) >= {
        "iteration",
        "timesteps_total",
        "time_total",
        "episodes_total",
        "last_result",
    }
    debug = t.get_auto_filled_metrics(debug_metrics_only=True)
    assert set(debug) == {"config", "date", "hostname", "node_ip", "pid", "timestamp", "trial_id"}
    assert t.get_current_ip_pid()[1] == os.getpid()
    t.stop()
    assert t.cleaned


def test_removed_apis_raise_with_a_migration_hint():
    with pytest.raises(DeprecationWarning, match="save"):
        Counter().save_to_object()
    with pytest.raises(AttributeError, match="from_directory"):
        Checkpoint.from_dict  # noqa: B018
    with pytest.raises(AttributeError, match=r"Checkpoint\.path"):
        Checkpoint("/tmp").uri  # noqa: B018


def test_log_sys_usage_adds_perf():
    class Slow(Trainable):
        def step(self):
            time.sleep(0.8)
            return {}

    t = Slow({"log_sys_usage": True})
    r = t.train()
    t.stop()
    assert set(r["perf"]) >= {"cpu_util_percent", "ram_util_percent"}
    assert "perf" not in Counter().train()


def test_checkpoint_handle(tmp_path):
    src = tmp_path / "ck"
    src.mkdir()
    (src / "w.txt").write_text("1")
    (src / ".kubetune-manifest.json").write_text("{}")
    ck = Checkpoint.from_directory(src)
    assert ck.path == str(src) and ck.is_local
    with ck.as_directory() as d:
        assert d == str(src)
    out = ck.to_directory(str(tmp_path / "copy"))
    assert sorted(os.listdir(out)) == ["w.txt"]  # the manifest is kubetune's, not the user's
    ck.set_metadata({"a": 1})
    ck.update_metadata({"b": 2})
    assert ck.get_metadata() == {"a": 1, "b": 2}
    with pytest.raises(TypeError, match="not a path"):
        os.fspath(ck)
    assert "Checkpoint(filesystem=local" in repr(ck)


def test_validate_save_restore():
    assert validate_save_restore(Counter) is True
    assert validate_save_restore(DirCounter, {"start": 3}) is True

    class AbsolutePath(Counter):
        def save_checkpoint(self, checkpoint_dir):
            path = os.path.join(checkpoint_dir, "v.txt")
            with open(path, "w") as f:
                f.write(str(self.value))
            return {"file": path}  # an absolute path baked into the checkpoint

        def load_checkpoint(self, checkpoint):
            with open(checkpoint["file"]) as f:
                self.value = int(f.read())

    with pytest.raises(FileNotFoundError):
        validate_save_restore(AbsolutePath)


def test_with_parameters():
    class Takes(Trainable):
        def setup(self, config, data=None):
            self.data = data

        def step(self):
            return {"n": len(self.data)}

    wrapped = kubetune.with_parameters(Takes, data=[1, 2, 3])
    assert wrapped(config={}).train()["n"] == 3

    def fn(config, data):
        return data

    assert kubetune.with_parameters(fn, data=5)({}) == 5
