"""Result lines, the writer thread, the progress heartbeat, the display, and what a
storage failure in the middle of a run turns into."""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

import kubetune
import kubetune_contract as contract
from kubetune.runtime.display import LiveLine, PlainLines, Reporter, make_reporter, summarize
from kubetune.runtime.persist import Persister, ResultEncoder
from kubetune.storage import Storage, StorageError
from kubetune.storage.base import check_limit
from kubetune.storage.results import read_result_bytes

# Temporary folders the SDK makes land in each test's tmp_path.
pytestmark = pytest.mark.usefixtures("own_tmp")


class Scalar:
    """Stands in for a numpy scalar: JSON cannot hold it, .item() can."""

    def __init__(self, value: float) -> None:
        self.value = value

    def item(self) -> float:
        return self.value


class Opaque:
    def __str__(self) -> str:
        return "opaque!"


@pytest.mark.parametrize(
    "result",
    [
        {"loss": 0.5, "done": False, "training_iteration": 3, "config": {"lr": 1e-3}},
        {"nested": {"a": [1, 2, {"b": None}]}, "unicode": "héllo ✓", "quote": 'a"b\\c\n'},
        {"neg": -0.0, "tiny": 5e-324, "t": (1, 2), "f": 0.04979538917541504, "e": 4.7e-07},
        {"big": 10**30, "x": 1.5},  # beyond 64 bits: the standard library's path
        {1: "int key", 2.5: "float key", False: "bool key", None: "none key"},
    ],
    ids=["plain", "nested-unicode", "numbers", "big-int", "scalar-keys"],
)
def test_lines_hold_what_json_dumps_holds(result):
    line = ResultEncoder().line(result)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == json.loads(json.dumps(result, default=str))


def test_lines_are_strict_json():
    enc = ResultEncoder()
    for result in (
        {"nan": float("nan"), "inf": float("inf"), "minf": float("-inf")},
        {"nan": float("nan"), "big": 10**30},
    ):
        parsed = json.loads(enc.line(result), parse_constant=lambda c: pytest.fail(c))
        assert parsed["nan"] is None
    assert json.loads(enc.line({"x": Scalar(1.5), "o": Opaque()})) == {"x": 1.5, "o": "opaque!"}
    tuple_key: dict[Any, str] = {(1, 2): "tuple key"}
    assert json.loads(enc.line(tuple_key)) == {"(1, 2)": "tuple key"}
    loop: dict[str, Any] = {}
    loop["self"] = loop
    assert "unserializable_result" in json.loads(enc.line(loop))


class MemoryStorage(Storage):
    """S3's semantics in a dict: objects are written whole, never grown in place."""

    uri = "mem://run"

    def __init__(self, fail_after: int | None = None) -> None:
        self.objects: dict[str, bytes] = {}
        self.fail_after = fail_after
        self.writes: list[tuple[str, int]] = []

    def _tick(self) -> None:
        if self.fail_after is not None:
            if self.fail_after <= 0:
                raise StorageError("bucket vanished")
            self.fail_after -= 1

    def check(self) -> None:
        pass

    def read_bytes(self, path: str, limit: int | None = None) -> bytes | None:
        data = self.objects.get(path)
        return None if data is None else check_limit(path, data, limit)

    def write_bytes(self, path: str, data: bytes) -> None:
        self._tick()
        self.writes.append((path, len(data)))
        self.objects[path] = bytes(data)

    def append_bytes(self, path: str, data: bytes) -> None:
        raise AssertionError("results never append on a store that rewrites objects")

    def list_dirs(self, prefix: str = "") -> list[str]:
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        return path in self.objects

    def upload_dir(self, local_dir: Path, path: str) -> list[tuple[str, int]]:
        raise NotImplementedError

    def download_dir(self, path: str, local_dir: Path) -> None:
        raise NotImplementedError

    def delete_dir(self, path: str) -> None:
        raise NotImplementedError

    def list_files(self, prefix: str = "") -> list[tuple[str, int]]:
        return sorted(
            (k[len(prefix) :], len(v)) for k, v in self.objects.items() if k.startswith(prefix)
        )

    def delete(self, path: str) -> None:
        self.objects.pop(path, None)


class MemoryStore:
    """RunStore's surface the Persister uses, in memory."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.storage = MemoryStorage(fail_after)
        self.progress: list[dict[str, Any]] = []

    @property
    def results(self) -> bytes:
        return read_result_bytes(self.storage)

    def write_progress(self, body: bytes) -> None:
        self.progress.append(json.loads(body))


def test_writer_thread_flushes_on_its_own_and_on_demand():
    store = MemoryStore()
    p = Persister(store, interval_s=0.05, heartbeat_s=0.1)
    p.start()
    p.add({"i": 1})
    deadline = time.monotonic() + 5
    while not store.results and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.results == b'{"i":1}\n'
    assert contract.RESULT_FILE not in store.storage.objects  # assembled at the end only
    p.submit_progress(contract.Progress(run_id=None, state="running", iteration=0, updated=1.0))
    time.sleep(0.4)  # the heartbeat rewrites the last document with a fresh time
    assert store.progress[0]["updated"] == 1.0 and store.progress[-1]["updated"] > 1.0
    p.add({"i": 2})
    p.close()
    assert store.results.decode().splitlines() == ['{"i":1}', '{"i":2}']
    assert store.storage.objects[contract.RESULT_FILE] == b'{"i":1}\n{"i":2}\n'


def test_a_write_error_is_kept_for_the_loop():
    store = MemoryStore()
    p = Persister(store, interval_s=0.01)
    p.start()
    store.storage.fail_after = 0
    p.add({"i": 1})
    deadline = time.monotonic() + 5
    while p.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert isinstance(p.error, StorageError)
    with pytest.raises(StorageError):
        p.close()
    store.storage.fail_after = None  # the store is back: nothing was lost
    p.flush()
    assert store.results == b'{"i":1}\n' and p.error is None


def test_storage_failing_mid_run_ends_with_the_storage_code(tmp_path, monkeypatch):
    from kubetune.storage.local import LocalStorage

    calls = {"n": 0}
    real = LocalStorage.append_bytes

    def flaky(self, path, data):
        calls["n"] += 1
        if calls["n"] > 1:
            raise StorageError("disk gone: check the volume")
        real(self, path, data)

    monkeypatch.setattr(LocalStorage, "append_bytes", flaky)

    class Steps(kubetune.Trainable):
        def step(self):
            time.sleep(0.01)
            return {"x": 1}

        def save_checkpoint(self, checkpoint_dir):
            return {}

        def load_checkpoint(self, checkpoint):
            pass

    out = kubetune.run(
        Steps,
        storage=str(tmp_path / "r"),
        verbose=0,
        raise_on_failure=False,
        checkpoint={"frequency": 1},
        stop={"training_iteration": 50},
    )
    assert out.exit_code == contract.EXIT_STORAGE and "disk gone" in out.message


def test_summary_and_reporters():
    from kubetune.storage.checkpoints import CheckpointInfo

    info = CheckpointInfo(iteration=10, path="/r/checkpoint_000010", time=0.0)
    line = summarize(12, {"loss": 0.123456, "acc": 0.9, "time_total_s": 3.21, "config": {}}, info)
    assert line == "iter 12 | loss=0.1235 acc=0.9 | 3.2s | ckpt 10"
    assert summarize(0, None, None) == "iter 0 | no ckpt"
    out = io.StringIO()
    live = LiveLine(out)
    live.progress(1, {"loss": 1.0}, None)
    live.event("checkpoint x")
    live.close()
    assert (
        out.getvalue().startswith("\r\x1b[2Kiter 1 | loss=1") and "checkpoint x\n" in out.getvalue()
    )
    plain = io.StringIO()
    lines = PlainLines(plain, every_s=60)
    lines.progress(1, {"loss": 1.0}, None)
    lines.progress(2, {"loss": 0.5}, None)  # throttled
    assert plain.getvalue().count("iter ") == 1
    assert type(make_reporter(0)) is Reporter and isinstance(
        make_reporter(1, io.StringIO()), PlainLines
    )


def test_progress_values_are_json_safe():
    from kubetune.runtime.progress_builder import build_progress

    doc = build_progress(
        run_id=None,
        state="running",
        reason="",
        message="",
        iteration=1,
        last_result={"a": float("inf"), "s": Scalar(2.0), "o": Opaque(), "n": None},
        latest=None,
        best=None,
        checkpoints=[],
        restored_from=None,
    ).to_dict()
    assert doc["last_result"] == {"a": "Infinity", "s": 2.0, "n": None}
    assert not any(
        isinstance(v, float) and not math.isfinite(v) for v in doc["last_result"].values()
    )
    json.dumps(doc, allow_nan=False)
