"""Shipping a trainable by value (spec.code): pack and load round trips, and
every refusal happening before anything is unpickled, proven with a payload
whose unpickling would leave a marker file."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import kubetune
import kubetune_contract as contract
from kubetune import worker
from kubetune.runtime import shipping
from kubetune.runtime.shipping import code_key, code_uri, digest, is_within_run, load_shipped, pack
from kubetune.sdk.errors import InvalidTrainable
from kubetune.storage import Storage, open_storage

HEX = "0123456789abcdef" * 4
OTHER_HEX = "f" * 64
THIS_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
OTHER_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor + 1}"


class Model(kubetune.Trainable):
    def setup(self, config):
        self.value = config.get("start", 0)

    def step(self):
        self.value += 1
        return {"value": self.value}

    def save_checkpoint(self, checkpoint_dir):
        return {"value": self.value}

    def load_checkpoint(self, checkpoint):
        self.value = checkpoint["value"]


def train_fn(config):
    for i in range(config.get("n", 2)):
        kubetune.report({"x": i * config.get("scale", 1)})


class Marker:
    """Unpickling it creates `path`: the proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


class Opener:
    """open_storage, recording every URI it was asked to open."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    def __call__(self, uri: str) -> Storage:
        self.opened.append(uri)
        return open_storage(uri)


def upload(run_uri: str, data: bytes, sha: str | None = None) -> dict[str, Any]:
    """Store data as shipped code under sha (default: its own digest), as the
    client does, and return the spec.code naming it."""
    sha = sha or digest(data)
    open_storage(run_uri).write_bytes(code_key(sha), data)
    return {"uri": code_uri(run_uri, sha), "sha256": sha, "python": THIS_PYTHON}


@pytest.fixture
def run_uri(tmp_path) -> str:
    return str(tmp_path / "store" / "default" / "job")


@pytest.fixture
def evil(tmp_path) -> Iterator[tuple[bytes, Path]]:
    """A payload whose unpickling creates a marker file, checked to work, and
    the marker; the test fails if the marker exists afterwards."""
    probe = tmp_path / "probe"
    cloudpickle.loads(cloudpickle.dumps(Marker(probe))).close()
    assert probe.exists()  # the payload does run code when unpickled
    marker = tmp_path / "unpickled"
    yield cloudpickle.dumps(Marker(marker)), marker
    assert not marker.exists(), "the payload was unpickled"


# --- pure helpers ----------------------------------------------------------------


def test_pure_helpers():
    assert digest(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert shipping.python_version() == THIS_PYTHON
    assert code_key(HEX) == f".kubetune/code/{HEX}.pkl" == contract.code_key(HEX)
    assert shipping.CODE_DIR == contract.CODE_DIR == ".kubetune/code/"
    assert code_uri("s3://b/ns/job/", HEX) == f"s3://b/ns/job/.kubetune/code/{HEX}.pkl"
    assert shipping.WARN_BYTES == 10 * 1024 * 1024
    assert shipping.MAX_BYTES == 100 * 1024 * 1024


RUN = "s3://b/exp/ns/job"


@pytest.mark.parametrize(
    ("run", "uri", "inside"),
    [
        (RUN, f"{RUN}/.kubetune/code/{HEX}.pkl", True),
        (RUN + "/", f"{RUN}/.kubetune/code/{HEX}.pkl", True),
        ("/data/ns/job", f"/data/ns/job/.kubetune/code/{HEX}.pkl", True),
        (RUN, f"s3://other/exp/ns/job/.kubetune/code/{HEX}.pkl", False),
        (RUN, f"{RUN}/../other/.kubetune/code/{HEX}.pkl", False),
        (RUN, f"{RUN}/.kubetune/code/../../../job2/.kubetune/code/{HEX}.pkl", False),
        (RUN, f"{RUN}/.kubetune/code/../{HEX}.pkl", False),
        (RUN, f"s3://b/exp/ns/jobx/.kubetune/code/{HEX}.pkl", False),
        ("s3://b/exp/ns/jo", f"{RUN}/.kubetune/code/{HEX}.pkl", False),
        ("/data/ns/job", f"/data/ns/job2/.kubetune/code/{HEX}.pkl", False),
        (RUN, f"{RUN}/.kubetune/code/trainable.pkl", False),
        (RUN, f"{RUN}/.kubetune/code/{HEX.upper()}.pkl", False),
        (RUN, f"{RUN}/.kubetune/code/{HEX[:-1]}.pkl", False),
        (RUN, f"{RUN}/.kubetune/code/{HEX}", False),
        (RUN, f"{RUN}/.kubetune/code/{HEX}.pkl.bak", False),
        (RUN, f"{RUN}/.kubetune/code/{HEX}.pkl/x", False),
        (RUN, f"{RUN}/.kubetune/code/sub/{HEX}.pkl", False),
        (RUN, f"{RUN}/{HEX}.pkl", False),
        (RUN, f"{RUN}/checkpoint_000001/{HEX}.pkl", False),
        ("", f"/.kubetune/code/{HEX}.pkl", False),
        ("s3://", f"s3://.kubetune/code/{HEX}.pkl", False),
    ],
    ids=[
        "inside",
        "run-with-slash",
        "local-inside",
        "other-bucket",
        "dotdot-up",
        "dotdot-in-name",
        "dotdot-to-run",
        "sibling-prefix",
        "run-is-a-prefix",
        "local-sibling",
        "non-hex-name",
        "uppercase-hex",
        "short-hex",
        "no-suffix",
        "extra-suffix",
        "below-name",
        "subfolder",
        "not-in-code-dir",
        "in-a-checkpoint",
        "no-run-folder",
        "bucketless",
    ],
)
def test_is_within_run(run, uri, inside):
    assert is_within_run(run, uri) is inside
    assert contract.is_within_run(run, uri) is inside


# --- pack and load ---------------------------------------------------------------


def test_class_round_trip(run_uri, tmp_path):
    code = upload(run_uri, pack(Model))
    cls = load_shipped(code, run_uri, open_storage)
    assert cls.__qualname__ == "Model" and issubclass(cls, kubetune.Trainable)
    result = kubetune.run(
        cls, config={"start": 5}, storage=run_uri, stop={"training_iteration": 2}, verbose=0
    )
    assert result.metrics is not None and result.metrics["value"] == 7


def test_function_round_trip(run_uri):
    code = upload(run_uri, pack(train_fn))
    fn = load_shipped(code, run_uri, open_storage)
    result = kubetune.run(fn, config={"n": 3, "scale": 2}, storage=run_uri, verbose=0)
    assert result.metrics is not None and result.metrics["x"] == 4


def test_a_lambda_and_with_parameters_ship(run_uri):
    lam = load_shipped(upload(run_uri, pack(lambda config: None)), run_uri, open_storage)
    assert callable(lam)
    wrapped = kubetune.with_parameters(Model, big=[1, 2, 3])
    cls = load_shipped(upload(run_uri, pack(wrapped)), run_uri, open_storage)
    assert issubclass(cls, kubetune.Trainable) and cls.__name__ == "Model"


SCRIPT = textwrap.dedent(
    """
    import json, sys
    import kubetune
    from kubetune.runtime.shipping import load_shipped
    from kubetune.storage import open_storage

    code, run_uri = json.loads(sys.argv[1]), sys.argv[2]
    trainable = load_shipped(code, run_uri, open_storage)
    result = kubetune.run(trainable, storage=run_uri, stop={"training_iteration": 2}, verbose=0)
    print(json.dumps(result.metrics))
    """
)


def load_elsewhere(code: dict[str, Any], run_uri: str, cwd: Path) -> dict[str, Any]:
    """Load and run the shipped code in a fresh interpreter that cannot import
    the module it came from."""
    cwd.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(code), run_uri],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture
def local_source(tmp_path, monkeypatch) -> Iterator[Callable[[str], Any]]:
    """Import modules from a folder of this test only (a user's project)."""
    src = tmp_path / "src"
    src.mkdir()
    monkeypatch.syspath_prepend(str(src))
    names: list[str] = []

    def make(name: str, files: dict[str, str]) -> Any:
        for rel, text in files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_text(textwrap.dedent(text))
        importlib.invalidate_caches()
        names.append(name)
        return importlib.import_module(name)

    yield make
    roots = {n.split(".")[0] for n in names}
    for name in list(sys.modules):
        if name.split(".")[0] in roots:
            del sys.modules[name]


def test_the_test_modules_class_travels_by_value(run_uri, tmp_path):
    code = upload(run_uri, pack(Model))
    assert load_elsewhere(code, run_uri, tmp_path / "elsewhere")["value"] == 2


def test_a_local_package_travels_by_value_with_its_siblings(run_uri, tmp_path, local_source):
    models = local_source(
        "kt_ship_pkg.models",
        {
            "kt_ship_pkg/__init__.py": "",
            "kt_ship_pkg/helpers.py": "def bump(x):\n    return x + 10\n",
            "kt_ship_pkg/models.py": """
                import kubetune
                from kt_ship_pkg.helpers import bump

                class Local(kubetune.Trainable):
                    def setup(self, config):
                        self.value = 0
                    def step(self):
                        self.value = bump(self.value)
                        return {"value": self.value}
                """,
        },
    )
    before = cloudpickle.list_registry_pickle_by_value()
    code = upload(run_uri, pack(models.Local))
    assert cloudpickle.list_registry_pickle_by_value() == before  # registered for pack only
    assert load_elsewhere(code, run_uri, tmp_path / "elsewhere")["value"] == 20


def test_installed_packages_are_not_shipped():
    import yaml

    data = pack(yaml.safe_load)  # a function from site-packages: by reference
    assert len(data) < 200 and b"yaml" in data


# --- pack refusals and sizes --------------------------------------------------------


class NotATrainable:
    pass


class FakeRayBase:
    pass


FakeRayBase.__name__ = "Trainable"
FakeRayBase.__module__ = "ray.tune.trainable.trainable"


class RayStyle(FakeRayBase):
    pass


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (42, "neither a kubetune.Trainable subclass nor a function"),
        ("examples.mnist:MNIST", "neither a kubetune.Trainable subclass nor a function"),
        (NotATrainable, "is a class but not a kubetune.Trainable subclass"),
        (RayStyle, "subclasses ray.tune.Trainable"),
        (Model(), "pass the class itself"),
        (lambda a, b: None, "exactly one positional argument"),
    ],
    ids=["int", "string", "plain-class", "ray-class", "instance", "two-args"],
)
def test_pack_refuses_what_is_not_a_trainable(obj, message):
    with pytest.raises(InvalidTrainable, match=message):
        pack(obj)


def test_pack_warns_then_refuses_by_size(monkeypatch):
    monkeypatch.setattr(shipping, "WARN_BYTES", 100)
    with pytest.warns(UserWarning, match=r"the pickled trainable Model is \d+ bytes"):
        pack(Model)
    monkeypatch.setattr(shipping, "MAX_BYTES", 200)
    with pytest.raises(InvalidTrainable) as err:
        pack(Model)
    assert "above the 200 bytes limit; keep data out of the class (read it in setup)" in str(
        err.value
    )
    monkeypatch.setattr(shipping, "WARN_BYTES", 10**9)
    monkeypatch.setattr(shipping, "MAX_BYTES", 10**9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pack(Model)


# --- load refusals: nothing is unpickled --------------------------------------------


def test_a_tampered_object_is_refused_naming_both_digests(run_uri, evil):
    payload, _marker = evil
    good = pack(Model)
    sha = digest(good)
    code = upload(run_uri, payload, sha=sha)  # the object was replaced after submit
    with pytest.raises(InvalidTrainable) as err:
        load_shipped(code, run_uri, open_storage)
    msg = str(err.value)
    assert f"has sha256 {digest(payload)}, not {sha}" in msg
    assert "the shipped code was changed after submit" in msg


def test_one_flipped_byte_is_refused(run_uri):
    good = pack(Model)
    bad = bytes([good[0] ^ 1]) + good[1:]
    code = upload(run_uri, bad, sha=digest(good))
    with pytest.raises(InvalidTrainable, match=f"not {digest(good)} as spec.code says"):
        load_shipped(code, run_uri, open_storage)


def test_another_python_is_refused_before_download(run_uri, evil):
    payload, _marker = evil
    code = upload(run_uri, payload) | {"python": OTHER_PYTHON}  # digest right: only Python differs
    opener = Opener()
    with pytest.raises(InvalidTrainable) as err:
        load_shipped(code, run_uri, opener)
    assert str(err.value) == (
        f"shipped from Python {OTHER_PYTHON}, this worker runs {THIS_PYTHON}: use an image "
        f"with Python {OTHER_PYTHON}, or submit from {THIS_PYTHON}"
    )
    assert opener.opened == []


def test_a_patch_release_difference_is_fine(run_uri):
    code = upload(run_uri, pack(Model)) | {"python": f"{THIS_PYTHON}.99"}
    assert load_shipped(code, run_uri, open_storage).__qualname__ == "Model"


@pytest.mark.parametrize(
    "where",
    ["sibling", "dotdot", "other-root", "non-hex"],
)
def test_code_outside_the_run_folder_is_refused_before_download(tmp_path, run_uri, evil, where):
    payload, _marker = evil
    sha = digest(payload)
    others = {
        "sibling": run_uri + "x",
        "dotdot": f"{run_uri}/../other",
        "other-root": str(tmp_path / "elsewhere"),
    }
    if where == "non-hex":
        open_storage(run_uri).write_bytes(".kubetune/code/trainable.pkl", payload)
        uri = f"{run_uri}/.kubetune/code/trainable.pkl"
    else:
        uri = upload(others[where], payload)["uri"]
    opener = Opener()
    code = {"uri": uri, "sha256": sha, "python": THIS_PYTHON}
    with pytest.raises(InvalidTrainable) as err:
        load_shipped(code, run_uri, opener)
    assert str(err.value).startswith(
        f"code URI {uri} is outside the job's run folder {run_uri}: nothing is unpickled "
        "from elsewhere"
    )
    assert opener.opened == []


def test_a_uri_naming_another_digest_is_refused(run_uri, evil):
    payload, _marker = evil
    upload(run_uri, payload)
    code = {"uri": code_uri(run_uri, digest(payload)), "sha256": OTHER_HEX, "python": THIS_PYTHON}
    with pytest.raises(InvalidTrainable, match=r"does not name spec\.code\.sha256"):
        load_shipped(code, run_uri, Opener())


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("s3://b/x.pkl", "spec.code must be an object"),
        ({"sha256": HEX, "python": THIS_PYTHON}, "spec.code.uri must be a non-empty string"),
        ({"uri": 3, "sha256": HEX, "python": THIS_PYTHON}, "spec.code.uri must be"),
        ({"uri": "u", "sha256": HEX.upper(), "python": THIS_PYTHON}, "64 lowercase hex"),
        ({"uri": "u", "sha256": None, "python": THIS_PYTHON}, "64 lowercase hex"),
        ({"uri": "u", "sha256": HEX, "python": 3.11}, "a Python version such as"),
        ({"uri": "u", "sha256": HEX, "python": "py3"}, "a Python version such as"),
    ],
    ids=["not-object", "no-uri", "uri-int", "sha-upper", "sha-none", "python-float", "python-text"],
)
def test_a_malformed_spec_is_refused_first(run_uri, code, message):
    opener = Opener()
    with pytest.raises(InvalidTrainable, match=message):
        load_shipped(code, run_uri, opener)
    assert opener.opened == []


def test_a_missing_object_is_refused(run_uri):
    code = {"uri": code_uri(run_uri, HEX), "sha256": HEX, "python": THIS_PYTHON}
    with pytest.raises(InvalidTrainable, match="does not exist: its upload never finished"):
        load_shipped(code, run_uri, open_storage)


def test_an_object_above_the_limit_is_refused_unread(run_uri, evil, monkeypatch):
    payload, _marker = evil
    code = upload(run_uri, payload)
    monkeypatch.setattr(shipping, "MAX_BYTES", len(payload) - 1)
    with pytest.raises(InvalidTrainable, match=r"bytes, above the \d+ bytes limit"):
        load_shipped(code, run_uri, open_storage)


def test_a_missing_module_names_it_and_the_image(run_uri, local_source):
    gone = local_source("kt_ship_gone", {"kt_ship_gone.py": "def fn(config):\n    pass\n"})
    data = cloudpickle.dumps(gone.fn)  # by reference, as installed packages are
    del sys.modules["kt_ship_gone"]
    sys.path.remove(str(Path(gone.__file__).parent))
    code = upload(run_uri, data)
    with pytest.raises(InvalidTrainable) as err:
        load_shipped(code, run_uri, open_storage)
    msg = str(err.value)
    assert "needs module 'kt_ship_gone', which this worker image lacks" in msg
    assert "third-party packages are not shipped with the code" in msg
    assert "installed in the worker image (spec.image)" in msg


def test_what_unpickles_must_be_a_trainable(run_uri):
    code = upload(run_uri, cloudpickle.dumps(42))
    with pytest.raises(InvalidTrainable, match=r"neither a kubetune\.Trainable subclass"):
        load_shipped(code, run_uri, open_storage)


# --- S3 ----------------------------------------------------------------------------


@pytest.fixture
def s3(s3: Any) -> Any:
    """The conftest's S3, with this file's two buckets."""
    s3.create_bucket(Bucket="ship")
    s3.create_bucket(Bucket="other")
    return s3


def test_s3_round_trip_and_other_bucket(s3, evil):
    run = "s3://ship/experiments/default/job"
    code = upload(run, pack(Model))
    assert code["uri"] == f"{run}/.kubetune/code/{code['sha256']}.pkl"
    assert load_shipped(code, run, open_storage).__qualname__ == "Model"
    payload, _marker = evil
    moved = upload("s3://other/experiments/default/job", payload)
    with pytest.raises(InvalidTrainable, match="is outside the job's run folder"):
        load_shipped(moved, run, open_storage)


# --- the worker ------------------------------------------------------------------


def spec_for(run_uri: str, code: dict[str, Any] | None, trainable: str = "") -> dict[str, str]:
    spec = contract.WorkerSpec(
        trainable=trainable,
        run_uri=run_uri,
        run_id="uid-1",
        stop={"training_iteration": 2},
        code=code,
    )
    return {contract.WORKER_SPEC_ENV: spec.to_env()}


def test_worker_spec_with_and_without_code():
    old = '{"trainable": "m:A", "run_uri": "/r", "run_id": "u"}'
    spec = worker.read_spec({contract.WORKER_SPEC_ENV: old})
    assert spec.code is None and spec.trainable == "m:A"
    assert "code" not in json.loads(spec.to_env())  # older workers still read it
    code = {"uri": f"/r/.kubetune/code/{HEX}.pkl", "sha256": HEX, "python": THIS_PYTHON}
    shipped = worker.read_spec(spec_for("/r", code))
    assert shipped.code == code and shipped.trainable == ""
    assert worker.describe_trainable(shipped) == f"code sha256 {HEX[:12]}"
    named = worker.read_spec(spec_for("/r", code, trainable="Model"))
    assert worker.describe_trainable(named) == f"Model (code sha256 {HEX[:12]})"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"trainable": "", "run_uri": "/r", "run_id": "u"}', "needs trainable"),
        ('{"trainable": "", "run_uri": "/r", "run_id": "u", "code": "x"}', "code must be"),
        ('{"trainable": "m:A", "run_uri": "", "run_id": "u"}', "needs run_uri"),
    ],
    ids=["neither", "code-not-object", "no-run-uri"],
)
def test_worker_spec_refusals(raw, message):
    with pytest.raises(ValueError, match=message):
        worker.read_spec({contract.WORKER_SPEC_ENV: raw})


def run_worker(monkeypatch, tmp_path, env: dict[str, str]) -> tuple[int, str]:
    term = tmp_path / "termination-log"
    monkeypatch.setenv("KUBETUNE_TERMINATION_MESSAGE_PATH", str(term))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = worker.main()
    return code, term.read_text().strip()


def test_worker_runs_shipped_code(monkeypatch, tmp_path, run_uri, capsys):
    code = upload(run_uri, pack(Model))
    rc, message = run_worker(monkeypatch, tmp_path, spec_for(run_uri, code))
    assert rc == contract.EXIT_OK, message
    assert f"code sha256 {code['sha256'][:12]} -> {run_uri}" in capsys.readouterr().out
    progress = json.loads((Path(run_uri) / contract.PROGRESS_FILE).read_text())
    assert progress["state"] == "completed" and progress["run_id"] == "uid-1"


def test_worker_refuses_tampered_code_with_exit_3(monkeypatch, tmp_path, run_uri, evil):
    payload, _marker = evil
    sha = digest(pack(Model))
    code = upload(run_uri, payload, sha=sha)
    rc, message = run_worker(monkeypatch, tmp_path, spec_for(run_uri, code))
    assert rc == contract.EXIT_BAD_TRAINABLE == 3
    assert message.startswith("InvalidTrainable: shipped code ")
    assert f"not {sha} as spec.code says: the shipped code was changed after submit" in message
    assert not (Path(run_uri) / contract.PROGRESS_FILE).exists()  # the loop never started


def test_worker_refuses_code_outside_its_run_folder(monkeypatch, tmp_path, run_uri, evil):
    payload, _marker = evil
    code = upload(str(tmp_path / "store" / "default" / "jobx"), payload)
    rc, message = run_worker(monkeypatch, tmp_path, spec_for(run_uri, code))
    assert rc == contract.EXIT_BAD_TRAINABLE
    assert "is outside the job's run folder" in message


def test_importable_name_names_installed_code_and_ships_the_rest():
    import json as installed

    from kubetune import Trainable

    assert shipping.importable_name(installed.dumps) == "json:dumps"
    assert shipping.importable_name(Trainable) == "kubetune.sdk.trainable:Trainable"

    def local() -> None: ...

    assert shipping.importable_name(local) is None  # a function's body: <locals>
    main = type("FromMain", (), {"__module__": "__main__"})
    assert shipping.importable_name(main) is None
