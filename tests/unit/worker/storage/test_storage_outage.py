"""S3 that answered and then stops answering is retried with backoff for a
bounded time (a worker rides out a restart of the server); what cannot pass by
itself (refused credentials, a missing bucket, an endpoint that never answered)
fails at once."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from moto.server import ThreadedMotoServer

from kubetune.storage import OutagePolicy, StorageError
from kubetune.storage.s3 import S3Storage
from kubetune.storage.s3_errors import storage_error

BUCKET = "outage"


@pytest.mark.parametrize(
    ("attempt", "failing_for", "expected"),
    [
        (0, 0.0, 0.5),
        (1, 0.6, 1.0),
        (3, 5.0, 4.0),
        (4, 10.0, 5.0),  # capped
        (60, 20.0, 5.0),  # a huge attempt count stays capped (no overflow)
        (2, 58.5, 1.5),  # never sleeps past the outage budget
        (2, 60.0, None),  # budget spent: give up
    ],
    ids=["first", "second", "doubling", "cap", "many", "last-sliver", "spent"],
)
def test_outage_delays(attempt: int, failing_for: float, expected: float | None) -> None:
    assert OutagePolicy(outage_s=60).delay(attempt, failing_for) == expected


def test_no_outage_budget_never_waits() -> None:
    assert OutagePolicy().delay(0, 0.0) is None


def _client_error(code: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {}}
    response["ResponseMetadata"]["HTTPStatusCode"] = status
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (EndpointConnectionError(endpoint_url="http://s3:9000"), True),
        (_client_error("ServiceUnavailable", 503), True),
        (_client_error("SlowDown", 503), True),
        (_client_error("InternalError", 500), True),
        (_client_error("NotImplemented", 501), False),
        (_client_error("AccessDenied", 403), False),
        (_client_error("NoSuchBucket", 404), False),
        (_client_error("InvalidPart", 400), False),
    ],
    ids=["refused", "503", "slowdown", "500", "501", "403", "no-bucket", "400"],
)
def test_transient_or_not(exc: Exception, transient: bool) -> None:
    err = storage_error(exc, bucket="b", endpoint="http://s3:9000", what="write k")
    assert err.transient is transient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoS3:
    """A moto S3 server that can be stopped and started again on its port
    (moto keeps the buckets and objects in this process meanwhile)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def moto(aws_env: None) -> Iterator[MotoS3]:
    server = MotoS3()
    server.start()
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{server.port}").create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


def _storage(port: int, outage_s: float) -> S3Storage:
    return S3Storage(
        f"s3://{BUCKET}/run",
        endpoint_url=f"http://127.0.0.1:{port}",
        connect_timeout=1,
        read_timeout=2,
        max_attempts=1,
        outage_s=outage_s,
    )


def test_write_rides_out_a_server_restart(moto: MotoS3) -> None:
    storage = _storage(moto.port, outage_s=30)
    storage.check()
    storage.write_bytes("a.json", b"1")
    moto.stop()
    back = threading.Timer(2.0, moto.start)  # the server is away for 2 s
    back.start()
    t0 = time.monotonic()
    try:
        storage.write_bytes("b.json", b"2")
    finally:
        back.join()
    took = time.monotonic() - t0
    assert 1.5 < took < 10, took
    assert storage.read_bytes("b.json") == b"2"
    assert [p for p, _ in storage.list_files()] == ["a.json", "b.json"]


def test_outage_longer_than_the_budget_fails_with_a_clear_line(moto: MotoS3) -> None:
    storage = _storage(moto.port, outage_s=2)
    storage.write_bytes("a.json", b"1")
    moto.stop()
    t0 = time.monotonic()
    with pytest.raises(StorageError, match=r"cannot reach S3 endpoint .*still failing after 2s"):
        storage.write_bytes("b.json", b"2")
    assert 1.5 < time.monotonic() - t0 < 8


def test_an_endpoint_that_never_answered_fails_at_once(aws_env: None) -> None:
    storage = _storage(_free_port(), outage_s=300)
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="cannot reach S3 endpoint"):
        storage.check()
    assert time.monotonic() - t0 < 5


def test_a_missing_bucket_is_not_retried(moto: MotoS3) -> None:
    storage = _storage(moto.port, outage_s=300)
    storage.write_bytes("a.json", b"1")
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="does not exist"):
        storage.at("s3://no-such-bucket/x").write_bytes("a.json", b"1")
    assert time.monotonic() - t0 < 5
