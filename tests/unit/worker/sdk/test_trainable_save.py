"""`Trainable.save()` called by user code, outside a run: the folder carries the
same manifest and metrics as a checkpoint the loop commits, so `restore(path)`
continues the counters and `kubetune.run(restore_from=path)` accepts it."""

from __future__ import annotations

import json
import os

import pytest

import kubetune
import kubetune_contract as contract
from kubetune import Checkpoint, Trainable
from kubetune.sdk.result_keys import TRIAL_INFO, TrialInfo
from kubetune.sdk.storage_context import StorageContext

# Temporary folders the SDK makes land in each test's tmp_path.
pytestmark = pytest.mark.usefixtures("own_tmp")


class Stepper(Trainable):
    """Counts timesteps and episodes, and keeps its state in a file."""

    def setup(self, config):
        self.value = 0

    def step(self):
        self.value += 1
        return {"value": self.value, "timesteps_this_iter": 10, "episodes_this_iter": 2}

    def save_checkpoint(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "state.json"), "w") as f:
            json.dump({"value": self.value}, f)

    def load_checkpoint(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "state.json")) as f:
            self.value = json.load(f)["value"]


class DictStepper(Stepper):
    def save_checkpoint(self, checkpoint_dir):
        return {"value": self.value}

    def load_checkpoint(self, checkpoint):
        self.value = checkpoint["value"]


def trained(cls: type[Stepper], n: int) -> Stepper:
    t = cls()
    for _ in range(n):
        t.train()
    return t


def manifest(folder) -> dict:
    return json.loads(open(os.path.join(folder, contract.CHECKPOINT_MANIFEST)).read())


@pytest.mark.parametrize("cls", [Stepper, DictStepper], ids=["folder", "dict"])
def test_restore_by_path_continues_every_counter(tmp_path, cls):
    t1 = trained(cls, 3)
    t1.save(str(tmp_path / "ck"))
    t2 = cls()
    t2.restore(str(tmp_path / "ck"))
    assert t2.value == 3
    assert t2.iteration == t2.training_iteration == t1.iteration == 3
    assert t2._time_total == pytest.approx(t1._time_total)
    assert t2._timesteps_total == t1._timesteps_total == 30
    assert t2._episodes_total == t1._episodes_total == 6
    r = t2.train()
    assert r["training_iteration"] == 4 and r["iterations_since_restore"] == 1
    assert r["timesteps_total"] == 40 and r["episodes_total"] == 8
    assert r["time_total_s"] >= t1._time_total and r["value"] == 4


def test_the_manifest_is_the_one_the_loop_commits(tmp_path):
    t = trained(Stepper, 2)
    saved = t.save(str(tmp_path / "ck"))
    doc = manifest(tmp_path / "ck")
    assert doc["kind"] == "kubetune-checkpoint" and doc["iteration"] == 2
    assert doc["files"] == [
        {"path": "state.json", "size": os.path.getsize(tmp_path / "ck" / "state.json")}
    ]
    assert doc["metrics"]["training_iteration"] == 2 and doc["metrics"]["value"] == 2
    assert doc["metrics"]["timesteps_total"] == 20 and doc["metrics"]["episodes_total"] == 4
    # The returned result keeps Ray's shape: the last result, not the manifest.
    assert saved.metrics["training_iteration"] == 2
    assert not [n for n in os.listdir(tmp_path / "ck") if n.startswith(".kubetune-tmp-")]


def test_default_folder_and_checkpoint_object_continue_too():
    t = trained(Stepper, 2)
    saved = t.save()
    assert saved.checkpoint is not None
    t2 = Stepper()
    t2.restore(Checkpoint(saved.checkpoint.path))
    assert t2.iteration == 2 and t2.train()["training_iteration"] == 3


def test_save_before_train_restores_at_zero(tmp_path):
    Stepper().save(str(tmp_path / "ck"))
    assert manifest(tmp_path / "ck")["iteration"] == 0
    t = Stepper()
    t.restore(str(tmp_path / "ck"))
    assert t.iteration == 0 and t.train()["training_iteration"] == 1


def test_save_after_restore_carries_the_restored_counters(tmp_path):
    trained(Stepper, 5).save(str(tmp_path / "a"))
    t = trained(Stepper, 7)  # its last result (iteration 7) is older than what it restores
    t.restore(str(tmp_path / "a"))
    t.save(str(tmp_path / "b"))
    doc = manifest(tmp_path / "b")
    assert doc["iteration"] == 5 and doc["metrics"]["training_iteration"] == 5
    assert doc["metrics"]["timesteps_total"] == 50 and "value" not in doc["metrics"]
    t3 = Stepper()
    t3.restore(str(tmp_path / "b"))
    r = t3.train()
    assert r["training_iteration"] == 6 and r["timesteps_total"] == 60


def test_saving_again_into_a_folder_replaces_the_manifest(tmp_path):
    t = trained(Stepper, 1)
    t.save(str(tmp_path / "ck"))
    t.train()
    t.save(str(tmp_path / "ck"))
    assert manifest(tmp_path / "ck")["iteration"] == 2
    t2 = Stepper()
    t2.restore(str(tmp_path / "ck"))
    assert t2.iteration == 2 and t2.value == 2


def test_a_saved_folder_is_accepted_as_restore_from(tmp_path):
    trained(Stepper, 3).save(str(tmp_path / "ck"))
    result = kubetune.run(
        Stepper,
        storage=str(tmp_path / "run"),
        stop={"training_iteration": 5},
        restore_from=str(tmp_path / "ck"),
        verbose=0,
    )
    assert result.metrics["training_iteration"] == 5
    assert result.metrics["timesteps_total"] == 50
    assert result.restored_from is not None


def test_save_checkpoint_may_not_write_the_manifest_name(tmp_path):
    class Sneaky(Stepper):
        def save_checkpoint(self, checkpoint_dir):
            with open(os.path.join(checkpoint_dir, contract.CHECKPOINT_MANIFEST), "w") as f:
                f.write("{}")

    with pytest.raises(ValueError, match="a name kubetune reserves"):
        trained(Sneaky, 1).save(str(tmp_path / "ck"))


def test_inside_a_run_save_leaves_the_manifest_to_the_loop(tmp_path):
    context = StorageContext(str(tmp_path / "run"), str(tmp_path / "work"))
    t = Stepper({}, context)
    t.train()
    t.save(str(tmp_path / "a"))
    assert not os.path.exists(tmp_path / "a" / contract.CHECKPOINT_MANIFEST)
    # A subclass whose __init__ drops storage is still recognised by its trial info.
    t = Stepper({TRIAL_INFO: TrialInfo()})
    t.save(str(tmp_path / "b"))
    assert not os.path.exists(tmp_path / "b" / contract.CHECKPOINT_MANIFEST)


def test_a_run_of_a_class_dropping_storage_still_commits(tmp_path):
    class DropsStorage(Stepper):
        def __init__(self, config=None, *args, **kwargs):
            super().__init__(config)

    result = kubetune.run(
        DropsStorage,
        storage=str(tmp_path / "run"),
        stop={"training_iteration": 2},
        checkpoint={"frequency": 1},
        verbose=0,
    )
    assert result.exit_code == 0 and result.checkpoint is not None
