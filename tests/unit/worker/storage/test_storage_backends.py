"""The Storage interface behaves the same on a local folder and on S3 (moto)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import boto3
import pytest

from kubetune.storage import Storage, StorageError, open_storage
from kubetune.storage.local import LocalStorage
from kubetune.storage.s3 import MiB, S3Storage

BUCKET = "kubetune-test"  # the bucket of the conftest's `s3` fixture


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def test_read_write_roundtrip(storage: Storage) -> None:
    storage.check()
    assert storage.read_bytes("a/b.json") is None
    assert not storage.exists("a/b.json")
    storage.write_bytes("a/b.json", b"one")
    storage.write_bytes("a/b.json", b"two")
    assert storage.read_bytes("a/b.json") == b"two"
    assert storage.exists("a/b.json")
    assert not storage.exists("a")  # a folder is not an object


def test_append(storage: Storage) -> None:
    storage.append_bytes("result.json", b"1\n")
    storage.append_bytes("result.json", b"2\n")
    assert storage.read_bytes("result.json") == b"1\n2\n"


def test_write_if_absent(storage: Storage) -> None:
    assert storage.write_bytes_if_absent(".kubetune/run.json", b"first") is True
    assert storage.write_bytes_if_absent(".kubetune/run.json", b"second") is False
    assert storage.read_bytes(".kubetune/run.json") == b"first"


def test_listing_and_delete(storage: Storage) -> None:
    for path in ("x/1", "x/sub/2", "y/3", "top"):
        storage.write_bytes(path, path.encode())
    assert storage.list_dirs("") == ["x", "y"]
    assert storage.list_dirs("x") == ["sub"]
    assert storage.list_dirs("missing") == []
    assert storage.list_files("x") == [("1", 3), ("sub/2", 7)]
    storage.delete("x/1")
    storage.delete("x/1")  # deleting what is gone is fine
    assert storage.list_files("x") == [("sub/2", 7)]
    storage.delete_dir("x")
    assert storage.list_files("x") == []
    assert storage.read_bytes("y/3") == b"y/3"
    with pytest.raises(StorageError):
        storage.delete_dir("")


def test_upload_download_dir(storage: Storage, tmp_path: Path) -> None:
    files = {"model.bin": os.urandom(1000), "opt/state.pt": b"s", "empty": b""}
    src = make_tree(tmp_path / "src", files)
    copied = storage.upload_dir(src, "checkpoint_000001")
    assert sorted(copied) == sorted((k, len(v)) for k, v in files.items())
    assert dict(storage.list_files("checkpoint_000001")) == {k: len(v) for k, v in files.items()}
    out = tmp_path / "out"
    storage.download_dir("checkpoint_000001", out)
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data


def test_child_uri(storage: Storage) -> None:
    assert storage.child_uri("checkpoint_000003").endswith("/checkpoint_000003")
    assert storage.child_uri("checkpoint_000003").startswith(storage.uri)


def test_s3_multipart_upload_of_big_file(s3: Any, tmp_path: Path) -> None:
    storage = S3Storage(f"s3://{BUCKET}/p", part_size=5 * MiB, multipart_threshold=5 * MiB)
    data = os.urandom(12 * MiB)  # three parts
    make_tree(tmp_path / "src", {"weights.bin": data})
    storage.upload_dir(tmp_path / "src", "ck")
    head = boto3.client("s3").head_object(Bucket=BUCKET, Key="p/ck/weights.bin")
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # a multipart ETag
    storage.download_dir("ck", tmp_path / "out")
    assert (tmp_path / "out" / "weights.bin").read_bytes() == data


def test_s3_bucket_root_without_prefix(s3: Any) -> None:
    storage = S3Storage(f"s3://{BUCKET}")
    assert storage.uri == f"s3://{BUCKET}"
    storage.write_bytes("run/x", b"1")
    assert storage.list_dirs("") == ["run"]
    assert storage.child_uri("run") == f"s3://{BUCKET}/run"


def test_open_storage_picks_backend(s3: Any, tmp_path: Path) -> None:
    assert isinstance(open_storage(f"s3://{BUCKET}/a"), S3Storage)
    assert isinstance(open_storage(str(tmp_path)), LocalStorage)
    local = open_storage(f"file://{tmp_path}/f")
    assert isinstance(local, LocalStorage)
    assert local.uri == str(tmp_path / "f")


def test_local_relative_path_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = LocalStorage("runs/here")
    assert storage.uri == str(tmp_path / "runs" / "here")


def test_local_created_on_demand_and_no_temp_left(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path / "deep" / "store"))
    storage.check()
    assert (tmp_path / "deep" / "store").is_dir()
    storage.write_bytes("p.json", b"{}")
    assert os.listdir(tmp_path / "deep" / "store") == ["p.json"]


def test_local_refuses_escaping_paths(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path / "store"))
    with pytest.raises(StorageError, match=r"'\.\.'"):
        storage.write_bytes("../outside", b"x")


def test_local_check_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match="cannot create storage folder"):
        LocalStorage(str(blocker / "store")).check()
