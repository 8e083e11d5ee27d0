"""A process SIGKILLed in the middle of a checkpoint upload leaves nothing that
latest/list/restore/prune would trust, on a local folder and on an S3 server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from kubetune.storage import Storage
from kubetune.storage.checkpoints import (
    CheckpointError,
    download_checkpoint,
    open_checkpoint,
)
from kubetune.storage.local import LocalStorage
from kubetune.storage.runfolder import RunStore
from kubetune.storage.s3 import MiB, S3Storage
from kubetune_contract import CHECKPOINT_MANIFEST

BUCKET = "crash-test"
N_SMALL = 80

# The child commits checkpoint 1, then slows its transfers down (so the kill
# surely lands mid-upload) and commits checkpoint 2 until it is killed.
CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from kubetune.storage.runfolder import RunStore
    from kubetune.storage.local import LocalStorage
    from kubetune.storage.s3 import MiB, S3Storage

    backend, uri, src1, src2 = sys.argv[1:5]
    if backend == "local":
        storage = LocalStorage(uri)
    else:
        storage = S3Storage(uri, part_size=5 * MiB, multipart_threshold=5 * MiB, max_concurrency=2)
    store = RunStore(storage)
    store.claim("uid-1")
    store.commit_checkpoint(Path(src1), 1, {"acc": 0.5})
    if backend == "local":
        copy = storage._copy_file
        def slow_copy(src, dst):
            copy(src, dst)
            time.sleep(0.05)
        storage._copy_file = slow_copy
    else:
        storage._client.meta.events.register("before-send.s3", lambda **_: time.sleep(0.05))
    print("committed 1", flush=True)
    store.commit_checkpoint(Path(src2), 2, {"acc": 0.9})
    print("committed 2", flush=True)
    """
)


@pytest.fixture
def s3_server(moto_server: str) -> str:
    """The conftest's moto server, with this file's bucket."""
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=BUCKET)
    return moto_server


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def kill_mid_upload(
    backend: str, storage: Storage, tmp_path: Path, big: int
) -> tuple[dict[str, bytes], int]:
    """Run the child, SIGKILL it once part of checkpoint 2 is stored; returns
    checkpoint 1's files and the number of checkpoint 2 files in total."""
    files1 = {"model.bin": os.urandom(4096), "meta.json": b"{}"}
    files2 = {f"shard_{i:03d}": os.urandom(1024) for i in range(N_SMALL)}
    files2["big.bin"] = os.urandom(big)
    src1 = write_tree(tmp_path / "src1", files1)
    src2 = write_tree(tmp_path / "src2", files2)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), backend, storage.uri, str(src1), str(src2)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "committed 1"
        deadline = time.monotonic() + 60
        while len(storage.list_files("checkpoint_000002")) < 3:
            assert child.poll() is None, "the child ended before it could be killed"
            assert time.monotonic() < deadline, "checkpoint 2 never started uploading"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    return files1, len(files2)


def assert_nothing_trusted(
    storage: Storage,
    tmp_path: Path,
    files1: dict[str, bytes],
    total2: int,
    commit3: Callable[[], object],
) -> None:
    stored = dict(storage.list_files("checkpoint_000002"))
    assert 0 < len(stored) < total2, "the kill did not land mid-upload"
    assert CHECKPOINT_MANIFEST not in stored

    store = RunStore(storage)
    assert [c.iteration for c in store.list_checkpoints()] == [1]
    latest = store.latest_checkpoint()
    assert latest is not None and latest.iteration == 1
    best = store.best_checkpoint("acc")
    assert best is not None and best.iteration == 1  # 0.9 was never committed

    with pytest.raises(CheckpointError, match="is incomplete"):
        open_checkpoint(storage.child_uri("checkpoint_000002"))
    with pytest.raises(CheckpointError, match="is incomplete"):
        download_checkpoint(storage.child_uri("checkpoint_000002"), tmp_path / "never")

    out = tmp_path / "restored"
    download_checkpoint(latest.path, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files1

    # Newer than the latest complete one: could be an upload in progress; kept.
    assert store.prune(1, None) == []
    assert storage.list_files("checkpoint_000002") != []

    # Once a newer checkpoint completes, the dead upload is removed.
    commit3()
    assert [c.iteration for c in store.prune(1, None)] == [1]
    assert storage.list_files("checkpoint_000002") == []
    assert [c.iteration for c in store.list_checkpoints()] == [3]


def test_sigkill_mid_upload_local(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path / "runs" / "ns" / "job"))
    files1, total2 = kill_mid_upload("local", storage, tmp_path, big=1 * MiB)
    src3 = write_tree(tmp_path / "src3", {"m": b"3"})
    assert_nothing_trusted(
        storage, tmp_path, files1, total2, lambda: RunStore(storage).commit_checkpoint(src3, 3, {})
    )


def test_sigkill_mid_upload_s3(s3_server: str, tmp_path: Path) -> None:
    storage = S3Storage(f"s3://{BUCKET}/runs/ns/job")
    files1, total2 = kill_mid_upload("s3", storage, tmp_path, big=12 * MiB)
    src3 = write_tree(tmp_path / "src3", {"m": b"3"})
    assert_nothing_trusted(
        storage, tmp_path, files1, total2, lambda: RunStore(storage).commit_checkpoint(src3, 3, {})
    )
