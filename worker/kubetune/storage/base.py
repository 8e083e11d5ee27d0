"""The one small interface every storage backend implements, so the same loop
runs against a local folder on a laptop and against S3 in a pod.

Paths given to a backend are relative to its root (the run folder), always with
forward slashes. Checkpoint semantics (manifest written last, listing only
complete checkpoints, pruning) live in `kubetune.storage.checkpoints` and
`kubetune.storage.runfolder`, on top of this.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Piece:
    """Part of an object to compose: a whole stored object (`path`, `size`), or
    bytes in memory (`data`). A stored object whose bytes are also at hand
    gives both; the backend picks the cheaper."""

    path: str | None = None
    size: int = 0
    data: bytes | None = None

    def __post_init__(self) -> None:
        if self.path is None and self.data is None:
            raise ValueError("a piece needs a path or data")


class StorageError(Exception):
    """A storage problem the user must fix (bucket missing, credentials refused,
    endpoint unreachable). Its message is one line naming the problem and the fix.

    `transient` marks what may pass by itself (the endpoint not answering, a 5xx,
    throttling): a backend may retry those through an outage (see `OutagePolicy`);
    a refused credential or a missing bucket is never retried."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class OutagePolicy:
    """How long a backend keeps retrying a storage that answered before and then
    stopped answering, and how it spaces the retries (exponential, capped).

    A worker rides out a short S3 outage (a restart of the server, a network
    blip) instead of failing its job; `outage_s=0` fails at once, as before."""

    outage_s: float = 0.0
    first_delay_s: float = 0.5
    max_delay_s: float = 5.0

    def delay(self, attempt: int, failing_for_s: float) -> float | None:
        """Seconds to wait before retry number `attempt` (0 first), or None once
        the storage has been failing for `outage_s` (give up)."""
        left = self.outage_s - failing_for_s
        if left <= 0:
            return None
        wait = min(self.max_delay_s, self.first_delay_s * 2 ** min(attempt, 30))
        return min(wait, left)


class ObjectTooLarge(StorageError):
    """An object over the size its reader accepts (a progress file, a manifest,
    run.json): not what kubetune writes there, so it is refused unread."""


def check_limit(uri: str, data: bytes, limit: int | None) -> bytes:
    """data, or ObjectTooLarge when a read of at most limit+1 bytes got more than limit."""
    if limit is not None and len(data) > limit:
        raise ObjectTooLarge(
            f"{uri} is over {limit} bytes, more than kubetune ever writes there: "
            "it is ignored; delete or replace it"
        )
    return data


class Storage(abc.ABC):
    """A folder of objects: a local directory or an S3 prefix."""

    uri: str  # the root, as the user wrote it (a path, file://..., or s3://bucket/prefix)
    # True where append_bytes grows a file in place (a local disk); False where it
    # rewrites the object (S3), so a growing file must be kept another way.
    appends_in_place = False

    @abc.abstractmethod
    def check(self) -> None:
        """Fail fast with StorageError if the root cannot be used (missing bucket, bad
        credentials, unreachable endpoint)."""

    @abc.abstractmethod
    def read_bytes(self, path: str, limit: int | None = None) -> bytes | None:
        """The object's content, or None when it does not exist. With limit, an
        object over limit bytes raises ObjectTooLarge after reading at most
        limit+1 of them (storage content is untrusted: a huge file must not
        cost its reader that much memory)."""

    @abc.abstractmethod
    def write_bytes(self, path: str, data: bytes) -> None:
        """Create or replace one object atomically (readers see old or new, never half)."""

    @abc.abstractmethod
    def append_bytes(self, path: str, data: bytes) -> None:
        """Append to an object (result.json). On S3 this rewrites the object; callers batch."""

    @abc.abstractmethod
    def list_dirs(self, prefix: str = "") -> list[str]:
        """Names of the immediate sub-folders under prefix."""

    @abc.abstractmethod
    def exists(self, path: str) -> bool: ...

    @abc.abstractmethod
    def upload_dir(self, local_dir: Path, path: str) -> list[tuple[str, int]]:
        """Copy a local folder under path (in parallel where it helps); returns
        (relative file name, size) for every file copied."""

    @abc.abstractmethod
    def download_dir(self, path: str, local_dir: Path) -> None:
        """Copy every object under path into local_dir."""

    @abc.abstractmethod
    def delete_dir(self, path: str) -> None:
        """Remove every object under path."""

    @abc.abstractmethod
    def list_files(self, prefix: str = "") -> list[tuple[str, int]]:
        """(name relative to prefix, size) of every object under prefix, recursively."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """Remove one object; no error when it does not exist."""

    def size(self, path: str) -> int | None:
        """The object's size in bytes, or None when it does not exist."""
        for name, size in self.list_files(path.rpartition("/")[0]):
            if name == path.rpartition("/")[2]:
                return size
        return None

    def delete_many(self, paths: Iterable[str]) -> None:
        """Remove objects; no error for those that do not exist."""
        for path in paths:
            self.delete(path)

    def compose(self, path: str, pieces: Sequence[Piece]) -> int:
        """Write one object made of pieces, in order, atomically (readers see the
        old object or the whole new one). Returns its size. This fallback reads
        the stored pieces and writes the whole; S3 copies large pieces on the
        server instead."""
        data = b"".join(read_piece(self, p) for p in pieces)
        self.write_bytes(path, data)
        return len(data)

    def write_bytes_if_absent(self, path: str, data: bytes) -> bool:
        """Create an object only if none exists; False when one already did.

        Backends override this with an atomic create where they have one; this
        fallback has a small race window between the check and the write."""
        if self.exists(path):
            return False
        self.write_bytes(path, data)
        return True

    def child_uri(self, path: str) -> str:
        return self.uri.rstrip("/") + "/" + path.strip("/")


def read_piece(storage: Storage, piece: Piece) -> bytes:
    if piece.data is not None:
        return piece.data
    assert piece.path is not None
    data = storage.read_bytes(piece.path)
    if data is None:
        raise StorageError(f"{storage.child_uri(piece.path)} vanished while it was being copied")
    return data
