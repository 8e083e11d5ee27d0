"""Storage content is untrusted: a progress file, manifest or run.json in a
run folder that is malformed, huge or another run's is refused or ignored with
one log line, and never raises out of the reader; reads of both backends stop
at their bound. (How the operator treats such content: tests/unit/test_untrusted_progress.py.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

import kubetune_contract as contract
from kubetune.storage import ObjectTooLarge, open_storage
from kubetune.storage.checkpoints import (
    CheckpointError,
    build_manifest,
    open_checkpoint,
    parse_manifest,
)
from kubetune.storage.runfolder import MAX_PROGRESS_BYTES, RunConflictError, RunStore
from kubetune.storage.s3 import S3Storage

# --- files in a run folder ------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(open_storage(str(tmp_path / "run")))


def put(store: RunStore, path: str, data: bytes) -> None:
    store.storage.write_bytes(path, data)


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000, b""],
    ids=["not-json", "a-list", "not-utf8", "deeply-nested", "empty"],
)
def test_a_malformed_progress_file_reads_as_none_with_a_log_line(
    store: RunStore, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    put(store, contract.PROGRESS_FILE, data)
    with caplog.at_level(logging.WARNING, logger="kubetune"):
        assert store.read_progress() is None
    assert len(caplog.records) == 1


def test_a_huge_progress_file_is_refused_unread(
    store: RunStore, caplog: pytest.LogCaptureFixture
) -> None:
    put(store, contract.PROGRESS_FILE, b'{"a": "' + b"x" * (MAX_PROGRESS_BYTES + 10) + b'"}')
    with caplog.at_level(logging.WARNING, logger="kubetune"):
        assert store.read_progress() is None
    assert len(caplog.records) == 1 and "over" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    "data",
    [
        b'{"run_id": "x\\nInjected: line", "created": "now"}',
        b'{"run_id": "' + b"a" * 200 + b'"}',
        b'{"run_id": "' + b"a" * 100_000 + b'"}',  # over run.json's bound
        b"\x00\x01garbage",
    ],
    ids=["newline", "long", "huge", "garbage"],
)
def test_an_unreadable_run_file_is_another_run_named_safely(store: RunStore, data: bytes) -> None:
    put(store, contract.RUN_FILE, data)
    with pytest.raises(RunConflictError) as err:
        store.claim("my-uid")
    message = str(err.value)
    assert "id unreadable" in message and "\n" not in message and len(message) < 600


def test_a_run_file_of_another_run_is_refused(store: RunStore) -> None:
    put(store, contract.RUN_FILE, json.dumps({"run_id": "other", "created": "t"}).encode())
    with pytest.raises(RunConflictError, match="belongs to another run"):
        store.claim("mine")


def write_checkpoint(tmp_path: Path, store: RunStore, iteration: int) -> None:
    src = tmp_path / f"src{iteration}"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w" * 10)
    store.commit_checkpoint(src, iteration, {"score": 1})


@pytest.mark.parametrize(
    "change",
    [
        {"time": float("nan")},
        {"time": float("inf")},
        {"time": 1e300},
        {"time": -1},
        {"iteration": 7},  # another folder's manifest
        {"kind": "something-else"},
        {"files": "all"},
    ],
    ids=lambda c: f"{next(iter(c))}={next(iter(c.values()))!r}",
)
def test_a_damaged_manifest_hides_its_checkpoint_and_breaks_nothing(
    tmp_path: Path, store: RunStore, change: dict[str, Any]
) -> None:
    write_checkpoint(tmp_path, store, 2)
    write_checkpoint(tmp_path, store, 4)
    path = f"checkpoint_000004/{contract.CHECKPOINT_MANIFEST}"
    doc = json.loads(store.storage.read_bytes(path) or b"")
    doc.update(change)
    put(store, path, json.dumps(doc).encode())  # json writes NaN/Infinity, as a hostile writer may
    fresh = RunStore(store.storage)
    found = fresh.list_checkpoints()
    assert [c.iteration for c in found] == [2]
    for info in found:
        info.to_status()  # what the worker puts in its progress: no crash
    with pytest.raises(CheckpointError, match=r"damaged|incomplete"):
        open_checkpoint(store.storage.child_uri("checkpoint_000004"))


def test_a_huge_manifest_is_ignored(
    tmp_path: Path, store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_checkpoint(tmp_path, store, 3)
    monkeypatch.setattr("kubetune.storage.checkpoints.MAX_MANIFEST_BYTES", 64)
    assert RunStore(store.storage).list_checkpoints() == []
    with pytest.raises(CheckpointError, match="damaged"):
        open_checkpoint(store.storage.child_uri("checkpoint_000003"))


def test_parse_manifest_refuses_nesting_that_would_blow_the_stack() -> None:
    assert parse_manifest(b"[" * 100_000 + b"]" * 100_000) is None
    good = build_manifest(1, [("a", 1)], {"x": 1}, 1.0)
    assert parse_manifest(json.dumps(good).encode()) == good


# --- bounded reads on both backends ----------------------------------------------


def test_local_reads_stop_at_the_limit(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    storage.write_bytes("f", b"x" * 100)
    assert storage.read_bytes("f", limit=100) == b"x" * 100
    with pytest.raises(ObjectTooLarge, match="over 99 bytes"):
        storage.read_bytes("f", limit=99)
    assert storage.read_bytes("missing", limit=10) is None


def test_s3_reads_stop_at_the_limit(aws_env: None) -> None:
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="bkt")
        storage = S3Storage("s3://bkt/p")
        storage.write_bytes("f", b"x" * 100)
        storage.write_bytes("empty", b"")
        assert storage.read_bytes("f", limit=100) == b"x" * 100
        assert storage.read_bytes("empty", limit=100) == b""
        assert storage.read_bytes("missing", limit=100) is None
        with pytest.raises(ObjectTooLarge):
            storage.read_bytes("f", limit=99)
