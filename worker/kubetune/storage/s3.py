"""S3 (and S3-compatible servers: MinIO, Ceph, R2, versitygw) as storage, so a
worker pod's checkpoints and results outlive the pod.

Every failure leaves as a StorageError with one line naming the problem and the
fix (kubetune.storage.s3_errors); waits are bounded by timeouts and a bounded
retry count, so a wrong endpoint fails a job in seconds instead of hanging it.
Composing an object from parts is kubetune.storage.s3_multipart.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from kubetune.storage.base import (
    OutagePolicy,
    Piece,
    Storage,
    StorageError,
    check_limit,
    read_piece,
)
from kubetune.storage.s3_errors import (
    MISSING_BUCKET_CODES,
    NO_CONDITIONAL_CODES,
    error_code,
    ride_out,
    storage_error,
    translated,
)
from kubetune.storage.s3_multipart import MAX_PARTS, MiB, Part, plan_parts, upload_parts

T = TypeVar("T")


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

    def _errors(self, what: str = "") -> contextlib.AbstractContextManager[None]:
        return translated(self.bucket, self.endpoint, what)

    def _ride_out(self, call: Callable[[], T], what: str) -> T:
        """call(), retried through an outage if this endpoint answered before (s3_errors)."""
        value = ride_out(
            call, what, outage=self._outage, answered=lambda: self._answered, endpoint=self.endpoint
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
            if error_code(exc) not in MISSING_BUCKET_CODES:
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
                if error_code(exc) in ("NoSuchKey", "404"):
                    return None
                if ranged and error_code(exc) in ("InvalidRange", "416"):
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
            code = error_code(exc)
            if code in ("PreconditionFailed", "412"):
                return False
            if code in ("ConditionalRequestConflict", "409"):
                return False  # a concurrent conditional write to the same key is landing
            if code not in NO_CONDITIONAL_CODES:
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
                if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
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

    def _plan(self, pieces: Sequence[Piece]) -> list[Part]:
        """The parts of a composed object (s3_multipart.plan_parts)."""
        return plan_parts(pieces, self._key, lambda piece: read_piece(self, piece))

    @_rides_out
    def _multipart(self, path: str, plan: list[Part]) -> None:
        key = self._key(path)
        with self._errors(f"compose {key}"):
            upload_parts(self._client, self.bucket, key, plan)

    def _compose_in_stages(self, path: str, plan: list[Part]) -> int:
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
                if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
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
