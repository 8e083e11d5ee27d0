"""Fixtures of the storage tests: one Storage of each backend, and S3 as a
moto server that child processes reach (the in-process `s3` is the worker
conftest's)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetune.storage import Storage
from kubetune.storage.local import LocalStorage
from kubetune.storage.s3 import MiB, S3Storage

# The bucket of the worker conftest's `s3` fixture.
S3_BUCKET = "kubetune-test"


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
