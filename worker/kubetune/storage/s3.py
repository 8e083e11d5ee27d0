"""S3 (and S3-compatible servers: MinIO, Ceph, R2, versitygw) as storage, so a
worker pod's checkpoints and results outlive the pod.

Every failure leaves as a StorageError with one line naming the problem and the
fix; waits are bounded by timeouts and a bounded retry count, so a wrong
endpoint fails a job in seconds instead of hanging it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.exceptions as botocore_errors
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from s3transfer.exceptions import RetriesExceededError

from kubetune.storage.base import (
    OutagePolicy,
    Piece,
    Storage,
    StorageError,
    check_limit,
    read_piece,
)

log = logging.getLogger("kubetune.storage")
T = TypeVar("T")

MiB = 1024 * 1024
GiB = 1024 * MiB
# S3's multipart rules: every part but the last at least 5 MiB, a copied part at
# most 5 GiB, at most 10,000 parts.
MIN_PART = 5 * MiB
MAX_COPY_PART = 5 * GiB
MAX_PARTS = 10_000
# Bytes gathered in memory for one uploaded part of a composed object.
_DATA_PART = 64 * MiB

# Error codes that mean "the server refused who we are", whatever the reason.
_CREDENTIAL_CODES = frozenset(
    {
        "403",
        "Forbidden",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "InvalidClientTokenId",
        "AuthorizationHeaderMalformed",
        "XAdminUserNotFound",  # versitygw: an access key it does not know
    }
)
_MISSING_BUCKET_CODES = frozenset({"NoSuchBucket", "404", "NotFound"})
# Answers that say "the server is there but cannot serve now": retried through an outage.
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
    }
)
# Servers without conditional writes answer these to If-None-Match.
_NO_CONDITIONAL_CODES = frozenset({"NotImplemented", "501", "InvalidArgument", "InvalidRequest"})


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, prefix without slashes at either end) of s3://bucket/prefix."""
    if not uri.startswith("s3://"):
        raise StorageError(f"storage uri {uri!r} is not an S3 URI: write s3://BUCKET/PREFIX")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"storage uri {uri!r} names no bucket: write s3://BUCKET/PREFIX")
    return bucket, prefix.strip("/")


def effective_endpoint(
    endpoint_url: str | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The endpoint boto3 will use: the explicit one, else the environment's
    (AWS_ENDPOINT_URL_S3 before AWS_ENDPOINT_URL, as boto3 reads them)."""
    env = os.environ if environ is None else environ
    return endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


def storage_error(exc: Exception, *, bucket: str, endpoint: str, what: str = "") -> StorageError:
    """Map a boto3/botocore failure to one line naming the problem and the fix.
    Never includes credentials: only codes and our own words."""
    where = f" ({what})" if what else ""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _MISSING_BUCKET_CODES and (code == "NoSuchBucket" or not what):
            return StorageError(
                f"bucket '{bucket}' does not exist at {endpoint}: create it or fix storage.uri"
            )
        if code in _CREDENTIAL_CODES or status == 403:
            return StorageError(
                f"credentials refused by {endpoint} for bucket '{bucket}' ({code or status}): "
                "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the secretRef"
            )
        message = str(err.get("Message", "")).splitlines()[0] if err.get("Message") else ""
        transient = code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500)
        if code in _NO_CONDITIONAL_CODES:
            transient = False  # 501 NotImplemented: the server lacks the feature for good
        return StorageError(
            f"S3 request to {endpoint} for bucket '{bucket}'{where} failed: "
            f"{code or status} {message}".rstrip(),
            transient=transient,
        )
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(
            f"no usable S3 credentials for {endpoint}: set AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY or the job's storage.secretRef"
        )
    # Refused, unresolvable, timed out or cut off: all say "the endpoint is not
    # answering", which the user fixes the same way.
    if isinstance(
        exc,
        (botocore_errors.ConnectionError, botocore_errors.HTTPClientError, RetriesExceededError),
    ):
        return StorageError(
            f"cannot reach S3 endpoint {endpoint} ({type(exc).__name__}): check "
            "storage.endpointURL (or AWS_ENDPOINT_URL) and the network",
            transient=True,
        )
    if isinstance(exc, BotoCoreError):
        return StorageError(f"S3 error at {endpoint}{where}: {type(exc).__name__}: {exc}")
    return StorageError(f"S3 transfer to {endpoint}{where} failed: {type(exc).__name__}: {exc}")


def _rides_out(method: Callable[..., T]) -> Callable[..., T]:
    """Marks an S3Storage operation that is safe to repeat: it is retried
    through an outage (S3Storage._ride_out)."""

    @functools.wraps(method)
    def wrapper(self: S3Storage, *args: Any, **kwargs: Any) -> T:
        return self._ride_out(lambda: method(self, *args, **kwargs), method.__name__)

    return wrapper


class S3Storage(Storage):
    """An S3 prefix. Credentials come from the environment as boto3 finds them."""

    def __init__(
        self,
        uri: str,
        endpoint_url: str | None = None,
        *,
        credentials: Mapping[str, str] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 4,  # in all, the first try included
        multipart_threshold: int = 64 * MiB,
        part_size: int = 32 * MiB,
        max_concurrency: int = 8,
        outage_s: float = 0.0,
    ) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        # An endpoint that answered once is retried through an outage of up to
        # outage_s; one that never answered (a wrong endpoint) fails in seconds.
        self._outage = OutagePolicy(outage_s=outage_s)
        self._answered = False
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        endpoint = effective_endpoint(endpoint_url)
        config = Config(
            # Standard mode retries throttling and transient errors with capped
            # backoff; bounded attempts and timeouts bound the total wait.
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # One connection per transfer thread, or threads wait for the pool.
            max_pool_connections=max(10, max_concurrency * 2),
            # Newer botocore adds CRC checksums by default; several S3-compatible
            # servers reject or mishandle them, so send them only when required.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # Custom endpoints (MinIO, Ceph ...) rarely have wildcard DNS for
            # virtual-hosted buckets; path style works everywhere they run.
            s3={"addressing_style": "path"} if endpoint else None,
        )
        # Explicit credentials (a job's Secret, read by the operator) replace
        # the environment's; they live only inside the boto3 session.
        creds = credentials or {}
        session = boto3.session.Session(
            aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=creds.get("AWS_SESSION_TOKEN"),
        )
        self._client: Any = session.client("s3", endpoint_url=endpoint, config=config)
        self.endpoint = str(self._client.meta.endpoint_url)
        self._transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=part_size,
            max_concurrency=max_concurrency,
            use_threads=True,
            preferred_transfer_client="classic",
        )

    def at(self, uri: str) -> S3Storage:
        """The same client (connections, credentials, endpoint) on another
        s3:// prefix: a boto3 client costs ~100 ms and a few MiB to build, so
        a process that reads many run folders shares one per endpoint."""
        other = copy.copy(self)
        other.bucket, other.prefix = parse_s3_uri(uri)
        other.uri = (
            f"s3://{other.bucket}/{other.prefix}" if other.prefix else f"s3://{other.bucket}"
        )
        return other

    # --- helpers

    def _key(self, path: str) -> str:
        rel = path.strip("/")
        if self.prefix:
            return f"{self.prefix}/{rel}" if rel else self.prefix
        return rel

    def _dir_key(self, path: str) -> str:
        key = self._key(path)
        return f"{key}/" if key else ""

    @contextlib.contextmanager
    def _errors(self, what: str = "") -> Iterator[None]:
        try:
            yield
        except StorageError:
            raise
        except (ClientError, BotoCoreError, RetriesExceededError) as exc:
            raise storage_error(
                exc, bucket=self.bucket, endpoint=self.endpoint, what=what
            ) from None

    def _ride_out(self, call: Callable[[], T], what: str) -> T:
        """`call()`, retried with backoff while it fails transiently, for up to
        the outage policy's time, if this endpoint has answered before. Every
        operation wrapped this way is safe to repeat: whole-object writes,
        reads, listings, deletes, a multipart upload started afresh."""
        failing_since: float | None = None
        attempt = 0
        while True:
            try:
                value = call()
            except StorageError as exc:
                if not (exc.transient and self._answered):
                    raise
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                delay = self._outage.delay(attempt, now - failing_since)
                if delay is None:
                    raise StorageError(
                        f"{exc} (still failing after {now - failing_since:.0f}s of retries)",
                        transient=True,
                    ) from None
                if attempt == 0:
                    log.warning(
                        "S3 at %s is not answering (%s): retrying for up to %.0fs",
                        self.endpoint,
                        what,
                        self._outage.outage_s,
                    )
                time.sleep(delay)
                attempt += 1
                continue
            if failing_since is not None:
                log.warning(
                    "S3 at %s answers again after %.1fs (%s)",
                    self.endpoint,
                    time.monotonic() - failing_since,
                    what,
                )
            self._answered = True
            return value

    def _iter_objects(self, path: str) -> Iterator[dict[str, Any]]:
        paginator = self._client.get_paginator("list_objects_v2")
        with self._errors(f"list {self._dir_key(path)}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._dir_key(path)):
                yield from page.get("Contents", [])

    # --- the interface

    @_rides_out
    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in _MISSING_BUCKET_CODES:
                raise storage_error(exc, bucket=self.bucket, endpoint=self.endpoint) from None
            # HEAD answers carry no body, and some servers (versitygw) answer an
            # unknown access key with a bare 404: a listing tells which it is.
            with self._errors():
                self._client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
            raise storage_error(exc, bucket=self.bucket, endpoint=self.endpoint) from None
        except BotoCoreError as exc:
            raise storage_error(exc, bucket=self.bucket, endpoint=self.endpoint) from None

    @_rides_out
    def read_bytes(self, path: str, limit: int | None = None) -> bytes | None:
        key = self._key(path)
        # A ranged GET reads at most limit+1 bytes, so an object over the limit
        # is told apart without downloading it.
        ranged = {} if limit is None else {"Range": f"bytes=0-{limit}"}
        with self._errors(f"read {key}"):
            try:
                resp = self._client.get_object(Bucket=self.bucket, Key=key, **ranged)
            except ClientError as exc:
                if _code(exc) in ("NoSuchKey", "404"):
                    return None
                if ranged and _code(exc) in ("InvalidRange", "416"):
                    return b""  # an empty object has no byte 0 to range over
                raise
            data = bytes(resp["Body"].read())
        return check_limit(f"s3://{self.bucket}/{key}", data, limit)

    @_rides_out
    def write_bytes(self, path: str, data: bytes) -> None:
        key = self._key(path)
        with self._errors(f"write {key}"):
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data)

    @_rides_out
    def write_bytes_if_absent(self, path: str, data: bytes) -> bool:
        key = self._key(path)
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            code = _code(exc)
            if code in ("PreconditionFailed", "412"):
                return False
            if code in ("ConditionalRequestConflict", "409"):
                return False  # a concurrent conditional write to the same key is landing
            if code not in _NO_CONDITIONAL_CODES:
                raise storage_error(
                    exc, bucket=self.bucket, endpoint=self.endpoint, what=f"write {key}"
                ) from None
        except BotoCoreError as exc:
            raise storage_error(
                exc, bucket=self.bucket, endpoint=self.endpoint, what=f"write {key}"
            ) from None
        # The server has no conditional writes: check, then write (a small race).
        return super().write_bytes_if_absent(path, data)

    def append_bytes(self, path: str, data: bytes) -> None:
        # S3 objects cannot grow: read and rewrite. Results do not use this
        # (kubetune.storage.results writes segments); it stays for small files.
        old = self.read_bytes(path) or b""
        self.write_bytes(path, old + data)

    @_rides_out
    def size(self, path: str) -> int | None:
        key = self._key(path)
        with self._errors(f"head {key}"):
            try:
                resp = self._client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
            return int(resp["ContentLength"])

    @_rides_out
    def delete_many(self, paths: Iterable[str]) -> None:
        keys = [self._key(p) for p in paths]
        self._delete_keys(keys, f"delete {len(keys)} objects")

    def _delete_keys(self, keys: list[str], what: str) -> None:
        with self._errors(what):
            for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
                batch = [{"Key": k} for k in keys[i : i + 1000]]
                resp = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
                errors = resp.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise StorageError(
                        f"cannot delete s3://{self.bucket}/{first.get('Key')} at "
                        f"{self.endpoint}: {first.get('Code')} {first.get('Message', '')}".rstrip()
                    )

    def compose(self, path: str, pieces: Sequence[Piece]) -> int:
        """One multipart upload: stored pieces of 5 MiB and more are copied on the
        server (UploadPartCopy), so the client sends only the small pieces; a
        whole object under 5 MiB is one PutObject. A server without
        UploadPartCopy gets the read-and-write fallback."""
        plan = self._plan(pieces)
        total = sum(n for _kind, _src, n in plan)
        if len(plan) <= 1 and all(kind == "data" for kind, _src, _n in plan):
            data = plan[0][1] if plan else b""
            assert isinstance(data, bytes)
            self.write_bytes(path, data)
            return total
        if len(plan) > MAX_PARTS:
            return self._compose_in_stages(path, plan)
        try:
            self._multipart(path, plan)
        except StorageError as exc:
            if "NotImplemented" not in str(exc) and "501" not in str(exc):
                raise
            return super().compose(path, pieces)
        return total

    def _plan(self, pieces: Sequence[Piece]) -> list[tuple[str, Any, int]]:
        """("copy", key, size) and ("data", bytes, size) parts obeying S3's
        rules: a copied part follows nothing or at least 5 MiB of data."""
        plan: list[tuple[str, Any, int]] = []
        buf = bytearray()
        for piece in pieces:
            copyable = piece.path is not None and piece.size >= MIN_PART
            if copyable and (not buf or len(buf) >= MIN_PART):
                if buf:
                    plan.append(("data", bytes(buf), len(buf)))
                    buf = bytearray()
                assert piece.path is not None
                plan.extend(_copy_ranges(self._key(piece.path), piece.size))
                continue
            buf += read_piece(self, piece)
            if len(buf) >= _DATA_PART:
                plan.append(("data", bytes(buf), len(buf)))
                buf = bytearray()
        if buf or not plan:
            plan.append(("data", bytes(buf), len(buf)))
        return plan

    @_rides_out
    def _multipart(self, path: str, plan: list[tuple[str, Any, int]]) -> None:
        key = self._key(path)
        with self._errors(f"compose {key}"):
            upload = self._client.create_multipart_upload(Bucket=self.bucket, Key=key)
            upload_id = upload["UploadId"]
            try:
                parts = []
                for number, (kind, src, _n) in enumerate(plan, start=1):
                    if kind == "copy":
                        src_key, first, last = src
                        resp = self._client.upload_part_copy(
                            Bucket=self.bucket,
                            Key=key,
                            UploadId=upload_id,
                            PartNumber=number,
                            CopySource={"Bucket": self.bucket, "Key": src_key},
                            CopySourceRange=f"bytes={first}-{last}",
                        )
                        etag = resp["CopyPartResult"]["ETag"]
                    else:
                        resp = self._client.upload_part(
                            Bucket=self.bucket,
                            Key=key,
                            UploadId=upload_id,
                            PartNumber=number,
                            Body=src,
                        )
                        etag = resp["ETag"]
                    parts.append({"PartNumber": number, "ETag": etag})
                self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            except BaseException:
                with contextlib.suppress(ClientError, BotoCoreError):
                    self._client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id
                    )
                raise

    def _compose_in_stages(self, path: str, plan: list[tuple[str, Any, int]]) -> int:
        """More than 10,000 parts: compose groups into temporary objects (each
        well over 5 MiB), then those into the target, all copied on the server."""
        staged: list[Piece] = []
        try:
            for i in range(0, len(plan), MAX_PARTS // 2):
                group = plan[i : i + MAX_PARTS // 2]
                tmp = f"{path}.part-{len(staged):04d}.tmp"
                self._multipart(tmp, group)
                staged.append(Piece(path=tmp, size=sum(n for _k, _s, n in group)))
            return self.compose(path, staged)
        finally:
            self.delete_many(p.path for p in staged if p.path is not None)

    @_rides_out
    def list_dirs(self, prefix: str = "") -> list[str]:
        base = self._dir_key(prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        names: list[str] = []
        with self._errors(f"list {base}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base, Delimiter="/"):
                for cp in page.get("CommonPrefixes", []):
                    names.append(cp["Prefix"][len(base) :].rstrip("/"))
        return sorted(names)

    @_rides_out
    def exists(self, path: str) -> bool:
        key = self._key(path)
        with self._errors(f"head {key}"):
            try:
                self._client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
            return True

    @_rides_out
    def list_files(self, prefix: str = "") -> list[tuple[str, int]]:
        base = self._dir_key(prefix)
        return sorted(
            (obj["Key"][len(base) :], int(obj["Size"]))
            for obj in self._iter_objects(prefix)
            if not obj["Key"].endswith("/")  # folder markers some tools create
        )

    @_rides_out
    def upload_dir(self, local_dir: Path, path: str) -> list[tuple[str, int]]:
        local_dir = Path(local_dir)
        files = sorted(p for p in local_dir.rglob("*") if p.is_file())
        base = self._dir_key(path)
        done: list[tuple[str, int]] = []
        # One transfer manager for all files: its thread pool runs many small
        # files and the parts of big ones in parallel, with one bound on threads.
        with self._errors(f"upload to {base}"), self._manager() as manager:
            futures = []
            for src in files:
                rel = src.relative_to(local_dir).as_posix()
                futures.append(manager.upload(str(src), self.bucket, base + rel))
                done.append((rel, src.stat().st_size))
            for fut in futures:
                fut.result()
        return done

    @_rides_out
    def download_dir(self, path: str, local_dir: Path) -> None:
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        base = self._dir_key(path)
        objects = [o for o in self._iter_objects(path) if not o["Key"].endswith("/")]
        with self._errors(f"download {base}"), self._manager() as manager:
            futures = []
            for obj in objects:
                target = local_dir / obj["Key"][len(base) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                futures.append(manager.download(self.bucket, obj["Key"], str(target)))
            for fut in futures:
                fut.result()

    @_rides_out
    def delete_dir(self, path: str) -> None:
        if not path.strip("/"):
            raise StorageError("refusing to delete the whole storage prefix")
        keys = [o["Key"] for o in self._iter_objects(path)]
        self._delete_keys(keys, f"delete {self._dir_key(path)}")

    @_rides_out
    def delete(self, path: str) -> None:
        key = self._key(path)
        with self._errors(f"delete {key}"):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def _manager(self) -> Any:
        return create_transfer_manager(self._client, self._transfer_config)


def _copy_ranges(key: str, size: int) -> list[tuple[str, Any, int]]:
    """A stored object as copied parts of at most 5 GiB each, split evenly so
    that none falls under 5 MiB."""
    count = max(1, -(-size // MAX_COPY_PART))
    step = -(-size // count)
    out: list[tuple[str, Any, int]] = []
    for first in range(0, size, step):
        last = min(size, first + step) - 1
        out.append(("copy", (key, first, last), last - first + 1))
    return out


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
