"""The run folder API (RunStore, open/download by URI) on both backends."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kubetune.storage import Storage
from kubetune.storage.checkpoints import (
    CheckpointError,
    download_checkpoint,
    open_checkpoint,
)
from kubetune.storage.runfolder import RunConflictError, RunStore
from kubetune.storage.s3 import MiB
from kubetune_contract import CHECKPOINT_MANIFEST, PROGRESS_FILE, RESULT_FILE, RUN_FILE


@pytest.fixture
def store(storage: Storage) -> RunStore:
    return RunStore(storage)


def ckpt_dir(root: Path, files: dict[str, bytes] | None = None) -> Path:
    files = files if files is not None else {"model.bin": b"weights", "opt/state": b"s" * 100}
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def commit(store: RunStore, tmp_path: Path, iteration: int, **metrics: Any) -> None:
    store.commit_checkpoint(ckpt_dir(tmp_path / f"src{iteration}"), iteration, metrics)


# --- run identity ------------------------------------------------------------------------


def test_claim_same_id_twice_then_conflict(store: RunStore) -> None:
    store.claim("uid-1")
    RunStore(store.storage).claim("uid-1")  # a restarted pod of the same job
    doc = json.loads(store.storage.read_bytes(RUN_FILE) or b"")
    assert doc["run_id"] == "uid-1" and doc["created"].endswith("Z")
    with pytest.raises(RunConflictError, match="belongs to another run \\(id uid-1") as info:
        RunStore(store.storage).claim("uid-2")
    assert "\n" not in str(info.value)


def test_local_run_claims_fresh_id_and_never_refuses(store: RunStore) -> None:
    store.claim(None)
    assert store.run_id is not None and store.run_id.startswith("local-")
    other = RunStore(store.storage)
    other.claim(None)
    assert other.run_id == store.run_id  # the same folder keeps its first id


def test_local_run_into_a_claimed_folder(store: RunStore) -> None:
    store.claim("uid-1")
    RunStore(store.storage).claim(None)
    assert json.loads(store.storage.read_bytes(RUN_FILE) or b"")["run_id"] == "uid-1"


def test_claim_refuses_unowned_results(store: RunStore) -> None:
    store.storage.write_bytes(RESULT_FILE, b'{"a": 1}\n')
    with pytest.raises(RunConflictError, match="results of an unknown run"):
        store.claim("uid-1")
    assert store.storage.read_bytes(RUN_FILE) is None


def test_claim_race_loser_sees_conflict(store: RunStore) -> None:
    # Two claimers both saw no run file; only one create may win.
    winner = store.storage.write_bytes_if_absent(RUN_FILE, b'{"run_id": "uid-a"}')
    assert winner
    assert not store.storage.write_bytes_if_absent(RUN_FILE, b'{"run_id": "uid-b"}')
    with pytest.raises(RunConflictError):
        RunStore(store.storage).claim("uid-b")


# --- params, results, progress -------------------------------------------------------------


def test_params_results_progress(store: RunStore) -> None:
    store.write_params({"lr": 0.1, "path": Path("/x")})
    assert json.loads(store.storage.read_bytes("params.json") or b"") == {"lr": 0.1, "path": "/x"}
    store.append_results([{"training_iteration": 1}, {"training_iteration": 2}])
    store.append_results([])
    store.append_results([{"training_iteration": 3, "nan": float("nan")}])
    lines = (store.storage.read_bytes(RESULT_FILE) or b"").decode().splitlines()
    assert [json.loads(x)["training_iteration"] for x in lines] == [1, 2, 3]
    assert store.read_progress() is None
    store.write_progress(json.dumps({"iteration": 3, "state": "running"}).encode())
    store.write_progress(json.dumps({"iteration": 4, "state": "running"}).encode())
    assert store.read_progress() == {"iteration": 4, "state": "running"}
    store.storage.write_bytes(PROGRESS_FILE, b"{broken")
    assert store.read_progress() is None


# --- checkpoints ---------------------------------------------------------------------------


def test_commit_list_latest_download(store: RunStore, tmp_path: Path) -> None:
    assert store.list_checkpoints() == [] and store.latest_checkpoint() is None
    info = store.commit_checkpoint(ckpt_dir(tmp_path / "a"), 10, {"acc": 0.5, "cfg": {"lr": 1}})
    assert info.iteration == 10
    assert info.path == store.storage.child_uri("checkpoint_000010")
    assert info.metrics == {"acc": 0.5, "cfg/lr": 1}
    commit(store, tmp_path, 20, acc=0.4)
    assert [c.iteration for c in store.list_checkpoints()] == [10, 20]
    latest = store.latest_checkpoint()
    assert latest is not None and latest.iteration == 20
    assert store.best_checkpoint("acc").iteration == 10  # type: ignore[union-attr]

    out = tmp_path / "restored"
    got = download_checkpoint(info.path, out)
    assert got.iteration == 10 and got.metrics["acc"] == 0.5
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "model.bin",
        "opt/state",
    ]
    assert (out / "opt" / "state").read_bytes() == b"s" * 100
    assert open_checkpoint(info.path).to_status()["iteration"] == 10
    assert store.download(latest, tmp_path / "r2").iteration == 20


def test_manifest_is_written_last(store: RunStore, tmp_path: Path) -> None:
    big = os.urandom(11 * MiB)  # multipart on S3
    src = ckpt_dir(tmp_path / "src", {"big.bin": big, **{f"f{i}": b"x" * i for i in range(20)}})
    real_write = store.storage.write_bytes
    seen: list[dict[str, int]] = []

    def write_bytes(path: str, data: bytes) -> None:
        if path.endswith(CHECKPOINT_MANIFEST):
            present = dict(store.storage.list_files("checkpoint_000001"))
            assert CHECKPOINT_MANIFEST not in present
            seen.append(present)
        real_write(path, data)

    store.storage.write_bytes = write_bytes  # type: ignore[method-assign]
    store.commit_checkpoint(src, 1, {})
    assert len(seen) == 1
    assert seen[0]["big.bin"] == len(big)
    assert all(seen[0][f"f{i}"] == i for i in range(20))


def test_listing_ignores_incomplete_and_damaged(store: RunStore, tmp_path: Path) -> None:
    commit(store, tmp_path, 1)
    commit(store, tmp_path, 2)
    commit(store, tmp_path, 3)
    s = store.storage
    s.write_bytes("checkpoint_000004/model.bin", b"partial upload")  # no manifest
    s.write_bytes(f"checkpoint_000002/{CHECKPOINT_MANIFEST}", b"{truncated")
    s.delete("checkpoint_000003/model.bin")  # manifest vouches for a file that is gone
    s.write_bytes("checkpoint_000001/model.bin", b"short")  # other size than the manifest says
    s.write_bytes("not_a_checkpoint/x", b"1")
    fresh = RunStore(s)
    assert fresh.list_checkpoints() == []
    assert fresh.latest_checkpoint() is None
    assert fresh.best_checkpoint(None) is None
    for it in (1, 2, 3, 4):
        with pytest.raises(CheckpointError):
            open_checkpoint(s.child_uri(f"checkpoint_{it:06d}"))


def test_open_checkpoint_messages(store: RunStore, tmp_path: Path) -> None:
    s = store.storage
    missing = s.child_uri("checkpoint_000040")
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(missing)
    assert str(info.value).startswith(f"checkpoint {missing} does not exist")
    s.write_bytes("checkpoint_000041/model.bin", b"half")
    partial = s.child_uri("checkpoint_000041")
    with pytest.raises(CheckpointError) as info:
        download_checkpoint(partial, tmp_path / "out")
    assert str(info.value) == (
        f"checkpoint {partial} is incomplete (no manifest: its upload never finished); "
        "pick a complete one, e.g. the job's status.latestCheckpoint"
    )
    assert not (tmp_path / "out").exists()


def test_recommit_replaces_old_files(store: RunStore, tmp_path: Path) -> None:
    store.commit_checkpoint(ckpt_dir(tmp_path / "a", {"old.bin": b"o", "keep": b"1"}), 5, {"v": 1})
    store.commit_checkpoint(ckpt_dir(tmp_path / "b", {"keep": b"22"}), 5, {"v": 2})
    assert dict(store.storage.list_files("checkpoint_000005")).keys() == {
        "keep",
        CHECKPOINT_MANIFEST,
    }
    latest = store.latest_checkpoint()
    assert latest is not None and latest.metrics == {"v": 2}
    out = tmp_path / "out"
    store.download(latest, out)
    assert (out / "keep").read_bytes() == b"22" and not (out / "old.bin").exists()


def test_reserved_manifest_name(store: RunStore, tmp_path: Path) -> None:
    src = ckpt_dir(tmp_path / "a", {CHECKPOINT_MANIFEST: b"{}"})
    with pytest.raises(CheckpointError, match="reserves"):
        store.commit_checkpoint(src, 1, {})
    with pytest.raises(CheckpointError, match="iteration"):
        store.commit_checkpoint(ckpt_dir(tmp_path / "b"), -1, {})


def test_prune_by_recency(store: RunStore, tmp_path: Path) -> None:
    for it in (1, 2, 3, 4):
        commit(store, tmp_path, it)
    assert store.prune(None, None) == []
    deleted = store.prune(2, None)
    assert [c.iteration for c in deleted] == [1, 2]
    assert [c.iteration for c in store.list_checkpoints()] == [3, 4]
    assert store.storage.list_files("checkpoint_000001") == []


def test_prune_keeps_latest_and_best(store: RunStore, tmp_path: Path) -> None:
    for it, acc in [(1, 0.1), (2, 0.9), (3, 0.5), (4, 0.2), (5, 0.3)]:
        commit(store, tmp_path, it, acc=acc)
    deleted = store.prune(1, "acc", "max")
    assert sorted(c.iteration for c in deleted) == [1, 3, 4]
    assert [c.iteration for c in store.list_checkpoints()] == [2, 5]
    assert store.best_checkpoint("acc").iteration == 2  # type: ignore[union-attr]


def test_prune_leftovers_only_when_older_than_latest(store: RunStore, tmp_path: Path) -> None:
    s = store.storage
    commit(store, tmp_path, 2)
    s.write_bytes("checkpoint_000001/model.bin", b"dead upload")
    s.write_bytes("checkpoint_000003/model.bin", b"maybe in progress")
    assert store.prune(None, None) == []
    assert s.list_files("checkpoint_000001") == []
    assert s.list_files("checkpoint_000003") != []
    assert [c.iteration for c in store.list_checkpoints()] == [2]


def test_prune_without_any_complete_checkpoint_deletes_nothing(
    store: RunStore, tmp_path: Path
) -> None:
    store.storage.write_bytes("checkpoint_000001/model.bin", b"in progress")
    assert store.prune(1, None) == []
    assert store.storage.list_files("checkpoint_000001") != []
