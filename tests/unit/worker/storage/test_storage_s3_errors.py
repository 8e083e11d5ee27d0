"""S3 failures become one clear line, waits are bounded, and settings are those
S3-compatible servers need."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from moto import mock_aws

from kubetune.storage import StorageError
from kubetune.storage.s3 import S3Storage, effective_endpoint, parse_s3_uri
from kubetune.storage.s3_errors import storage_error

ENDPOINT = "http://minio.example:9000"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def client_error(code: str, status: int, message: str = "", op: str = "HeadBucket") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, op)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/a/b/", ("bucket", "a/b")),
    ],
    ids=["bucket-only", "trailing-slash", "prefix"],
)
def test_parse_s3_uri(uri: str, expected: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    "uri", ["s3://", "s3:///prefix", "http://x"], ids=["empty", "no-bucket", "scheme"]
)
def test_parse_s3_uri_rejects(uri: str) -> None:
    with pytest.raises(StorageError, match="s3://BUCKET/PREFIX"):
        parse_s3_uri(uri)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (client_error("404", 404), "bucket 'ckpts' does not exist at http://minio.example:9000"),
        (client_error("NoSuchBucket", 404, op="GetObject"), "create it or fix storage.uri"),
        (client_error("403", 403), "credentials refused by http://minio.example:9000"),
        (client_error("InvalidAccessKeyId", 403, "key AKIAEXAMPLE"), "AWS_SECRET_ACCESS_KEY"),
        (client_error("SignatureDoesNotMatch", 403, f"sig {SECRET}"), "or the secretRef"),
        (client_error("AccessDenied", 403, op="PutObject"), "credentials refused"),
        (
            EndpointConnectionError(endpoint_url=ENDPOINT),
            "cannot reach S3 endpoint http://minio.example:9000",
        ),
        (NoCredentialsError(), "no usable S3 credentials"),
        (client_error("SlowDown", 503, "Reduce your request rate."), "SlowDown"),
    ],
    ids=[
        "head-404",
        "no-such-bucket",
        "head-403",
        "bad-key-id",
        "bad-secret",
        "access-denied",
        "unreachable",
        "no-credentials",
        "other",
    ],
)
def test_storage_error_mapping(exc: Exception, expected: str) -> None:
    err = storage_error(exc, bucket="ckpts", endpoint=ENDPOINT)
    text = str(err)
    assert expected in text
    assert "\n" not in text
    assert SECRET not in text and "AKIAEXAMPLE" not in text


def test_missing_key_is_not_a_missing_bucket() -> None:
    # A 404 on an object read is about the object, not the bucket.
    err = storage_error(
        client_error("404", 404, op="HeadObject"), bucket="b", endpoint=ENDPOINT, what="head k"
    )
    assert "does not exist at" not in str(err)


def test_effective_endpoint() -> None:
    env = {"AWS_ENDPOINT_URL": "http://generic:9000", "AWS_ENDPOINT_URL_S3": "http://s3only:9000"}
    assert effective_endpoint("http://explicit:1", env) == "http://explicit:1"
    assert effective_endpoint(None, env) == "http://s3only:9000"
    assert (
        effective_endpoint(None, {"AWS_ENDPOINT_URL": "http://generic:9000"})
        == "http://generic:9000"
    )
    assert effective_endpoint(None, {}) is None


def test_client_settings_for_compatible_servers(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", ENDPOINT)
    storage = S3Storage("s3://ckpts/exp", max_attempts=3, connect_timeout=2, read_timeout=7)
    config = storage._client.meta.config
    assert storage.endpoint == ENDPOINT
    assert config.s3["addressing_style"] == "path"
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert (config.connect_timeout, config.read_timeout) == (2, 7)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_endpoint_fails_fast(aws_env: None) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    storage = S3Storage(
        "s3://ckpts/x", endpoint_url=url, connect_timeout=1, read_timeout=1, max_attempts=2
    )
    start = time.monotonic()
    with pytest.raises(StorageError) as info:
        storage.check()
    assert time.monotonic() - start < 10
    assert str(info.value).startswith(f"cannot reach S3 endpoint {url}")


def test_silent_endpoint_times_out(aws_env: None) -> None:
    # Accepts connections (the kernel does, via the backlog) but never answers.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        storage = S3Storage(
            "s3://ckpts/x", endpoint_url=url, connect_timeout=1, read_timeout=1, max_attempts=2
        )
        start = time.monotonic()
        with pytest.raises(StorageError, match="cannot reach S3 endpoint"):
            storage.read_bytes("k")
        assert time.monotonic() - start < 15


def test_no_credentials(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    storage = S3Storage(
        "s3://ckpts/x", endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1
    )
    with pytest.raises(StorageError, match="no usable S3 credentials"):
        storage.check()


class _Refusing(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that answers every request with one fixed status."""

    status = 403
    code = "InvalidAccessKeyId"

    def _answer(self, body: bool) -> None:
        payload = (
            f"<?xml version='1.0'?><Error><Code>{self.code}</Code>"
            f"<Message>refused</Message></Error>"
        ).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload) if body else 0))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[tuple[str, type[_Refusing]]]:
    handler = type("Handler", (_Refusing,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_check_maps_real_responses(
    aws_env: None, refusing_server: tuple[str, type[_Refusing]]
) -> None:
    url, handler = refusing_server
    storage = S3Storage("s3://ckpts/x", endpoint_url=url, max_attempts=1)
    with pytest.raises(StorageError) as info:
        storage.check()
    assert str(info.value).startswith(f"credentials refused by {url}")
    assert SECRET not in str(info.value)
    with pytest.raises(StorageError, match="credentials refused"):
        storage.read_bytes("k")  # GET carries an XML error body

    handler.status, handler.code = 404, "NoSuchBucket"
    with pytest.raises(StorageError, match=f"bucket 'ckpts' does not exist at {url}"):
        storage.check()


def test_missing_bucket_with_moto(aws_env: None) -> None:
    with mock_aws():
        storage = S3Storage("s3://no-such-bucket/x")
        with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
            storage.check()
        with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
            storage.read_bytes("k")


def test_conditional_put_falls_back_when_unsupported(aws_env: None) -> None:
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="ckpts")
        storage = S3Storage("s3://ckpts/x")
        real_put = storage._client.put_object
        conditional_calls: list[str] = []

        def put_without_conditions(**kwargs: Any) -> Any:
            if "IfNoneMatch" in kwargs:
                conditional_calls.append(kwargs["Key"])
                raise client_error("NotImplemented", 501, op="PutObject")
            return real_put(**kwargs)

        storage._client.put_object = put_without_conditions
        assert storage.write_bytes_if_absent("run.json", b"a") is True
        assert storage.write_bytes_if_absent("run.json", b"b") is False
        assert storage.read_bytes("run.json") == b"a"
        assert conditional_calls == ["x/run.json", "x/run.json"]


def test_conditional_put_other_errors_are_reported(aws_env: None) -> None:
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="ckpts")
        storage = S3Storage("s3://ckpts/x")

        def refuse(**kwargs: Any) -> Any:
            raise client_error("AccessDenied", 403, op="PutObject")

        storage._client.put_object = refuse
        with pytest.raises(StorageError, match="credentials refused"):
            storage.write_bytes_if_absent("run.json", b"a")


def test_explicit_credentials_replace_the_environment(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    creds = {"AWS_ACCESS_KEY_ID": "AKIAFROMSECRET", "AWS_SECRET_ACCESS_KEY": SECRET}
    with mock_aws():
        admin = boto3.client("s3", aws_access_key_id="x", aws_secret_access_key="y")
        admin.create_bucket(Bucket="ckpts")
        storage = S3Storage("s3://ckpts/x", credentials=creds)
        storage.check()  # would be NoCredentialsError without them
        storage.write_bytes("k", b"v")
        assert storage.read_bytes("k") == b"v"
        signer_creds = storage._client._request_signer._credentials
        assert signer_creds.access_key == "AKIAFROMSECRET"
        assert SECRET not in repr(storage.__dict__)
