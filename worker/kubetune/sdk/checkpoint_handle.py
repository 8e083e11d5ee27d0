"""`kubetune.Checkpoint`: Ray's handle on a checkpoint folder, local or in S3,
with the same methods (from_directory, as_directory, to_directory, path,
metadata), so user code that passes checkpoints around keeps working."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubetune_contract as contract

METADATA_FILE = ".metadata.json"

_REMOVED = {
    "from_dict": "write files into a folder and use Checkpoint.from_directory(path)",
    "to_dict": "read the files under Checkpoint.as_directory()",
    "from_bytes": "write the bytes into a folder and use Checkpoint.from_directory(path)",
    "to_bytes": "read the files under Checkpoint.as_directory()",
    "from_uri": "use Checkpoint(uri)",
    "to_uri": "use Checkpoint.path, or copy with to_directory()",
    "uri": "use Checkpoint.path",
    "get_preprocessor": "store the preprocessor as a file in the checkpoint folder",
    "set_preprocessor": "store the preprocessor as a file in the checkpoint folder",
}


def _removed(name: str) -> AttributeError:
    return AttributeError(
        f"Checkpoint.{name} was removed in Ray 2.7 and kubetune follows Ray: {_REMOVED[name]}"
    )


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


class _CheckpointMeta(type):
    def __getattr__(cls, name: str) -> Any:
        if name in _REMOVED:
            raise _removed(name)
        raise AttributeError(name)


class Checkpoint(metaclass=_CheckpointMeta):
    """A checkpoint folder: a local path, or a URI such as s3://bucket/run/checkpoint_000010."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        filesystem: Any = None,
        *,
        endpoint_url: str | None = None,
    ) -> None:
        raw = os.fspath(path)
        if is_remote(raw):
            self.path = raw
        else:
            raw = raw[len("file://") :] if raw.startswith("file://") else raw
            self.path = os.path.abspath(raw)
        # Accepted for Ray's signature; kubetune picks the backend from the path.
        self.filesystem = filesystem
        self.endpoint_url = endpoint_url

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str]) -> Checkpoint:
        return cls(path)

    @property
    def is_local(self) -> bool:
        return not is_remote(self.path)

    def to_directory(self, path: str | os.PathLike[str] | None = None) -> str:
        """Copy the checkpoint's files into path (default: a fresh temporary folder)
        and return that folder. The kubetune manifest is not copied."""
        dest = (
            os.fspath(path)
            if path is not None
            else os.path.join(tempfile.gettempdir(), f"checkpoint_tmp_{uuid.uuid4().hex}")
        )
        if self.is_local:
            if os.path.abspath(dest) != self.path:
                shutil.copytree(
                    self.path,
                    dest,
                    dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(contract.CHECKPOINT_MANIFEST),
                )
        else:
            from kubetune.storage.checkpoints import download_checkpoint

            download_checkpoint(self.path, Path(dest), endpoint_url=self.endpoint_url)
        return dest

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        """A local folder holding the checkpoint: its own path when local (nothing
        to clean up), else a download removed on exit."""
        if self.is_local:
            yield self.path
            return
        tmp = self.to_directory()
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # --- metadata: a small JSON file inside the folder, as in Ray ---------------
    def get_metadata(self) -> dict[str, Any]:
        raw: bytes | None
        if self.is_local:
            try:
                raw = Path(self.path, METADATA_FILE).read_bytes()
            except FileNotFoundError:
                raw = None
        else:
            raw = self._storage().read_bytes(METADATA_FILE)
        return dict(json.loads(raw)) if raw else {}

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        data = json.dumps(metadata, default=str).encode()
        if self.is_local:
            Path(self.path, METADATA_FILE).write_bytes(data)
        else:
            self._storage().write_bytes(METADATA_FILE, data)

    def update_metadata(self, metadata: dict[str, Any]) -> None:
        merged = self.get_metadata()
        merged.update(metadata)
        self.set_metadata(merged)

    def _storage(self) -> Any:
        from kubetune.storage import open_storage

        return open_storage(self.path, endpoint_url=self.endpoint_url)

    def __fspath__(self) -> str:
        raise TypeError(
            "a Checkpoint is not a path: use checkpoint.path, or "
            "`with checkpoint.as_directory() as d:` for a local folder"
        )

    def __getattr__(self, name: str) -> Any:
        if name in _REMOVED:
            raise _removed(name)
        raise AttributeError(f"'Checkpoint' object has no attribute {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checkpoint) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        fs = "local" if self.is_local else self.path.split("://", 1)[0]
        return f"Checkpoint(filesystem={fs}, path={self.path})"


class TrainingResult:
    """What `Trainable.save()` returns and `restore()` accepts (Ray's private
    `_TrainingResult`): a checkpoint and the metrics of the result it was taken at."""

    __slots__ = ("checkpoint", "metrics")

    def __init__(self, checkpoint: Checkpoint | None, metrics: dict[str, Any]) -> None:
        self.checkpoint = checkpoint
        self.metrics = metrics

    def __repr__(self) -> str:
        it = self.metrics.get("training_iteration")
        return f"TrainingResult(checkpoint={self.checkpoint!r}, training_iteration={it})"
