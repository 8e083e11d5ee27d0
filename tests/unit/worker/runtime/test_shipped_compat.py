"""Code shipped by value by kubetune 0.1.0 (the flat package: kubetune.trainable,
kubetune.function ...) loads with the current worker's load_shipped and trains,
checkpoints and resumes; a payload naming something with no home now is refused
in one line. The payloads in tests/fixtures/shipped_0_1_0 were pickled by 0.1.0's
own kubetune.shipping.pack (hack/make_shipped_fixtures.py)."""

from __future__ import annotations

import importlib
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import kubetune
import kubetune_contract as contract
from kubetune import worker
from kubetune.runtime import old_payloads, shipping
from kubetune.runtime.shipping import (
    OLD_MODULES,
    OLD_SPLITS,
    code_key,
    code_uri,
    digest,
    load_shipped,
)
from kubetune.sdk.errors import InvalidTrainable
from kubetune.sdk.trainable import Trainable
from kubetune.storage import open_storage

# tests/fixtures/shipped_0_1_0, wherever under tests/ this file is.
TESTS = next(folder for folder in Path(__file__).resolve().parents if folder.name == "tests")
FIXTURES = TESTS / "fixtures" / "shipped_0_1_0"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
THIS_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
# Pickled code objects load only on the Python that made them (load_shipped checks it).
same_python = pytest.mark.skipif(
    MANIFEST["python"] != THIS_PYTHON,
    reason=f"the fixtures were pickled on Python {MANIFEST['python']}",
)
# 0.1.0's public names that have no home now: a payload naming one is refused.
GONE = {"kubetune.progress.encode_progress"}
SHA = "0" * 64


def upload(run_uri: str, fixture: str) -> dict[str, str]:
    """The fixture uploaded into the run folder as 0.1.0's submit did; its spec.code."""
    data = (FIXTURES / fixture).read_bytes()
    sha = digest(data)
    assert sha == MANIFEST["entries"][fixture]["sha256"], f"{fixture} changed"
    open_storage(run_uri).write_bytes(code_key(sha), data)
    return {"uri": code_uri(run_uri, sha), "sha256": sha, "python": MANIFEST["python"]}


def ship(run_uri: str, fixture: str) -> Any:
    """The fixture uploaded, then loaded as the worker loads spec.code."""
    return load_shipped(upload(run_uri, fixture), run_uri, open_storage)


@pytest.fixture
def run_uri(tmp_path: Path) -> str:
    return str(tmp_path / "store" / "default" / "job")


def run(trainable: Any, storage: str, iterations: int, **kwargs: Any) -> Any:
    return kubetune.run(
        trainable,
        storage=storage,
        stop={"training_iteration": iterations},
        checkpoint=kubetune.CheckpointConfig(checkpoint_frequency=1),
        verbose=0,
        **kwargs,
    )


def assert_old_names_not_importable() -> None:
    for old in ("kubetune.trainable", "kubetune.function", "kubetune.policy"):
        assert old not in sys.modules
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)
    assert not hasattr(kubetune, "policy") and not hasattr(kubetune, "function")


# --- the fixtures: load, train, checkpoint, resume -------------------------------


@same_python
def test_a_0_1_0_trainable_class_trains_checkpoints_and_resumes(run_uri, tmp_path):
    cls = ship(run_uri, "counter_class.pkl")
    assert cls.__qualname__ == "Counter" and cls.__mro__[1] is Trainable
    storage = str(tmp_path / "run")
    config = {"start": 5, "step_size": 2}
    first = run(cls, storage, 3, config=config)
    assert first.state == "completed", first.message
    assert first.metrics["value"] == 11 and first.checkpoint is not None
    assert len(first.checkpoints) == 3
    # load_checkpoint: the second run resumes from iteration 3's checkpoint.
    second = run(cls, storage, 5, config=config)
    assert second.state == "completed", second.message
    assert second.restored_from is not None
    assert second.metrics["value"] == 15 and second.iteration == 5
    assert_old_names_not_importable()


@same_python
def test_a_0_1_0_with_parameters_class_trains(run_uri, tmp_path):
    cls = ship(run_uri, "with_parameters_class.pkl")
    assert issubclass(cls, Trainable) and cls.__name__ == "Counter"
    result = run(cls, str(tmp_path / "run"), 2, config={"start": 1})
    assert result.state == "completed", result.message
    assert result.metrics["value"] == 103 and result.checkpoint is not None


@same_python
@pytest.mark.parametrize(
    ("fixture", "scale"), [("report_function.pkl", 3), ("old_paths_function.pkl", 10)]
)
def test_a_0_1_0_function_reports_checkpoints_and_resumes(run_uri, tmp_path, fixture, scale):
    fn = ship(run_uri, fixture)
    storage = str(tmp_path / "run")
    first = run(fn, storage, 10, config={"steps": 3, "scale": scale})
    assert first.state == "completed", first.message
    assert first.metrics["score"] == 2 * scale and first.iteration == 3
    assert first.checkpoint is not None and len(first.checkpoints) == 3
    # get_checkpoint: the second run starts after the restored step.
    second = run(fn, storage, 10, config={"steps": 5, "scale": scale})
    assert second.state == "completed", second.message
    assert second.restored_from is not None
    assert second.metrics["score"] == 4 * scale and second.iteration == 5
    assert_old_names_not_importable()


@same_python
def test_old_module_paths_reach_the_new_homes_in_the_payload_only(run_uri, tmp_path):
    fn = ship(run_uri, "old_paths_function.pkl")
    names = fn.__globals__
    assert names["report"] is kubetune.report  # kubetune.function.report by reference
    assert names["OldCheckpoint"] is kubetune.Checkpoint  # kubetune.checkpoint_dir
    assert names["old_errors"].RunFailed is kubetune.RunFailed  # moved on its own
    assert names["old_errors"].KubetuneError is kubetune.KubetuneError
    assert names["result_keys"].TRAINING_ITERATION == "training_iteration"
    # The payload's `kubetune` also has the 0.1.0 submodules; the real one does not.
    assert names["kubetune"].policy.CheckpointConfig is kubetune.CheckpointConfig
    assert names["kubetune"].report is kubetune.report
    result = run(fn, str(tmp_path / "run"), 10, config={"steps": 2})
    assert result.metrics["keep"] == 2
    assert_old_names_not_importable()


def run_worker(monkeypatch, tmp_path, run_uri: str, fixture: str) -> tuple[int, str]:
    """The worker pod's entry point on a spec naming the fixture as spec.code."""
    spec = contract.WorkerSpec(
        trainable="",
        run_uri=run_uri,
        run_id="uid-1",
        stop={"training_iteration": 2},
        code=upload(run_uri, fixture),
    )
    term = tmp_path / "termination-log"
    monkeypatch.setenv("KUBETUNE_TERMINATION_MESSAGE_PATH", str(term))
    monkeypatch.setenv(contract.WORKER_SPEC_ENV, spec.to_env())
    return worker.main(), term.read_text().strip()


@same_python
def test_the_worker_runs_a_0_1_0_payload(monkeypatch, tmp_path, run_uri):
    rc, message = run_worker(monkeypatch, tmp_path, run_uri, "counter_class.pkl")
    assert rc == contract.EXIT_OK, message
    progress = json.loads((Path(run_uri) / contract.PROGRESS_FILE).read_text())
    assert progress["state"] == "completed" and progress["iteration"] == 2


@same_python
def test_the_worker_refuses_a_gone_name_with_exit_3(monkeypatch, tmp_path, run_uri):
    rc, message = run_worker(monkeypatch, tmp_path, run_uri, "gone_name_function.pkl")
    assert rc == contract.EXIT_BAD_TRAINABLE == 3
    assert message.startswith("InvalidTrainable: the shipped trainable (sha256 ")
    assert_clear_refusal(message, "kubetune.progress.encode_progress")
    assert not (Path(run_uri) / contract.PROGRESS_FILE).exists()  # the loop never started


# --- refusals ---------------------------------------------------------------------


def assert_clear_refusal(message: str, name: str) -> None:
    assert "\n" not in message
    assert f"refers to {name}, which has no home in this worker's kubetune" in message
    assert "it was likely pickled by kubetune 0.1.0 as released" in message
    assert "submit it again with the current kubetune" in message


@same_python
def test_a_0_1_0_payload_naming_a_gone_name_is_refused_in_one_line(run_uri):
    with pytest.raises(InvalidTrainable) as refused:
        ship(run_uri, "gone_name_function.pkl")
    assert_clear_refusal(str(refused.value), "kubetune.progress.encode_progress")


def test_a_gone_name_is_refused_whatever_the_python(run_uri):
    """The same refusal from a hand-made payload (no code object: any Python)."""
    data = b"ckubetune.progress\nencode_progress\n."
    with pytest.raises(InvalidTrainable) as refused:
        shipping._unpickle(data, digest(data))
    assert_clear_refusal(str(refused.value), "kubetune.progress.encode_progress")


class SubImport:
    """Pickles as cloudpickle's subimport(name): a module by reference."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> Any:
        return (cloudpickle.cloudpickle.subimport, (self.name,))


def test_an_old_module_without_a_home_is_refused(monkeypatch):
    monkeypatch.setitem(OLD_MODULES, "kubetune.vanished", "kubetune.nowhere")
    data = cloudpickle.dumps(SubImport("kubetune.vanished"))
    with pytest.raises(InvalidTrainable) as refused:
        shipping._unpickle(data, digest(data))
    assert_clear_refusal(str(refused.value), "the module kubetune.vanished")


def test_an_old_module_is_a_view_not_an_import():
    """subimport("kubetune.errors") gives the payload a view whose names come from
    their homes now; sys.modules does not learn the old name."""
    modules = ["kubetune.errors", "kubetune.function", "kubetune.progress"]
    data = cloudpickle.dumps([SubImport(name) for name in modules])
    errors, function, progress = shipping._unpickle(data, digest(data))
    assert errors.__name__ == "kubetune.errors"
    assert errors.RunFailed is kubetune.RunFailed
    assert errors.InvalidTrainable is InvalidTrainable
    assert function.report is kubetune.report
    assert progress.RUNNING == contract.RUNNING  # kubetune.progress went two ways
    with pytest.raises(AttributeError) as missing:
        errors.no_such_name  # noqa: B018
    assert_clear_refusal(str(missing.value), "kubetune.errors.no_such_name")
    assert_old_names_not_importable()
    assert "kubetune.errors" not in sys.modules


def test_current_names_and_third_party_refusals_are_unchanged():
    data = cloudpickle.dumps(SubImport("kubetune.sdk.function"))
    assert shipping._unpickle(data, digest(data)) is sys.modules["kubetune.sdk.function"]
    data = pickle.dumps(SubImport("no_such_package_here"))
    with pytest.raises(InvalidTrainable, match="needs module 'no_such_package_here'"):
        shipping._unpickle(data, digest(data))


# --- the table covers 0.1.0 -------------------------------------------------------


def test_every_0_1_0_module_has_a_home_and_every_public_name_resolves():
    """old_names.json lists what each 0.1.0 module defined. A module gone now must
    be in OLD_MODULES; each public name of those must resolve (or be in GONE and
    get the refusal). A move that forgets the table fails here."""
    defined: dict[str, list[str]] = json.loads((FIXTURES / "old_names.json").read_text())
    unpickler = old_payloads.Unpickler(b"", SHA)
    for module in defined:
        if module not in OLD_MODULES:
            importlib.import_module(module)  # still where 0.1.0 had it
    gone, wrong = set(), []
    for module, names in defined.items():
        if module not in OLD_MODULES:
            continue
        for name in names:
            if name.startswith("_"):
                continue
            try:
                found = unpickler.find_class(module, name)
            except InvalidTrainable as exc:
                assert_clear_refusal(str(exc), f"{module}.{name}")
                gone.add(f"{module}.{name}")
                continue
            if getattr(found, "__name__", None) != name:
                wrong.append(f"{module}.{name} -> {found!r}")
    assert gone == GONE
    assert wrong == []
    for module, home in OLD_MODULES.items():
        assert module in defined, module
        for where in (home, *OLD_SPLITS.get(module, ())):
            importlib.import_module(where)
