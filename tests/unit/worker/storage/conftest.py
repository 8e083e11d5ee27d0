"""Fixtures of the storage tests: S3 as moto fakes it, in this process or as a
server that child processes reach, and one Storage of each backend."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from kubetune.storage import Storage
from kubetune.storage.local import LocalStorage
from kubetune.storage.s3 import MiB, S3Storage

# The bucket the `s3` fixture creates (and `storage` uses).
S3_BUCKET = "kubetune-test"


@pytest.fixture
def s3(aws_env: None) -> Iterator[None]:
    """S3 faked by moto in this process, with the bucket S3_BUCKET."""
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=S3_BUCKET)
        yield


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """A run folder's Storage on each backend: a local folder, then S3 (moto)
    with parts small enough that a test file of a few MiB goes multipart."""
    if request.param == "local":
        return LocalStorage(str(tmp_path / "runs" / "ns" / "job"))
    request.getfixturevalue("s3")
    return S3Storage(
        f"s3://{S3_BUCKET}/runs/ns/job", part_size=5 * MiB, multipart_threshold=5 * MiB
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def moto_server(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server in this process, reachable from child processes: its URL,
    also in AWS_ENDPOINT_URL (which a child inherits). It holds no bucket."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    try:
        yield endpoint
    finally:
        server.stop()
