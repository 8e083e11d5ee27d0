"""A local folder as storage: the default for `kubetune.run` on a laptop, and
the same interface the S3 backend implements for pods."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from kubetune.storage.base import Storage, StorageError, check_limit

# Temporary files live next to their target so os.replace/os.link stay on one
# filesystem (a rename across filesystems is not atomic).
_TMP_PREFIX = ".kubetune-tmp-"


class LocalStorage(Storage):
    """A folder, given as a plain path or a file:// URI, created on demand."""

    appends_in_place = True

    def __init__(self, uri: str) -> None:
        raw = uri[len("file://") :] if uri.startswith("file://") else uri
        if not raw:
            raise StorageError(f"storage uri {uri!r} names no folder: give a path or file:///path")
        self.root = Path(raw).expanduser().absolute()
        # Absolute, so checkpoint paths handed to users restore from any working dir.
        self.uri = str(self.root)

    def _path(self, path: str) -> Path:
        rel = path.strip("/")
        if any(part == ".." for part in rel.split("/")):
            raise StorageError(f"storage path {path!r} leaves the storage folder: remove '..'")
        return self.root / rel if rel else self.root

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create storage folder {self.root}: {exc.strerror or exc}; "
                "fix the storage path or its permissions"
            ) from None
        if not os.access(self.root, os.W_OK):
            raise StorageError(
                f"storage folder {self.root} is not writable: fix its permissions "
                "or choose another storage path"
            )

    def read_bytes(self, path: str, limit: int | None = None) -> bytes | None:
        target = self._path(path)
        try:
            if limit is None:
                return target.read_bytes()
            with target.open("rb") as f:
                return check_limit(str(target), f.read(limit + 1), limit)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def _write_temp(self, target: Path, data: bytes) -> str:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except BaseException:
            _discard(tmp)
            raise
        return tmp

    def write_bytes(self, path: str, data: bytes) -> None:
        target = self._path(path)
        tmp = self._write_temp(target, data)
        try:
            os.replace(tmp, target)
        except BaseException:
            _discard(tmp)
            raise

    def write_bytes_if_absent(self, path: str, data: bytes) -> bool:
        target = self._path(path)
        tmp = self._write_temp(target, data)
        try:
            # link() refuses an existing target, and the file appears with its full
            # content at once: an atomic create-if-absent (O_EXCL would expose a
            # half-written file to readers).
            os.link(tmp, target)
        except FileExistsError:
            return False
        finally:
            _discard(tmp)
        return True

    def append_bytes(self, path: str, data: bytes) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "ab") as f:
            f.write(data)

    def size(self, path: str) -> int | None:
        try:
            st = self._path(path).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def list_dirs(self, prefix: str = "") -> list[str]:
        try:
            with os.scandir(self._path(prefix)) as it:
                return sorted(e.name for e in it if e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def exists(self, path: str) -> bool:
        return self._path(path).is_file()

    def list_files(self, prefix: str = "") -> list[tuple[str, int]]:
        base = self._path(prefix)
        out: list[tuple[str, int]] = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(_TMP_PREFIX):  # a write that has not landed (or never will)
                    continue
                full = Path(dirpath) / name
                try:
                    size = full.stat().st_size
                except FileNotFoundError:  # removed while we walked
                    continue
                out.append((full.relative_to(base).as_posix(), size))
        return sorted(out)

    def _copy_file(self, src: Path, dst: Path) -> None:
        shutil.copyfile(src, dst)

    def upload_dir(self, local_dir: Path, path: str) -> list[tuple[str, int]]:
        local_dir = Path(local_dir)
        dest = self._path(path)
        copied: list[tuple[str, int]] = []
        for src in sorted(_iter_files(local_dir)):
            rel = src.relative_to(local_dir).as_posix()
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            self._copy_file(src, target)
            copied.append((rel, target.stat().st_size))
        dest.mkdir(parents=True, exist_ok=True)
        return copied

    def download_dir(self, path: str, local_dir: Path) -> None:
        src = self._path(path)
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        for rel, _size in self.list_files(path):
            target = local_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, target)

    def delete_dir(self, path: str) -> None:
        target = self._path(path)
        if target == self.root:
            raise StorageError("refusing to delete the whole storage folder")
        shutil.rmtree(target, ignore_errors=True)

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(path).unlink()


def _iter_files(root: Path) -> list[Path]:
    """Every regular file under root, following symlinked files (users link big
    weights into checkpoint folders)."""
    files: list[Path] = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            if p.is_file():
                files.append(p)
    return files


def _discard(tmp: str) -> None:
    """Removes a temporary file a write left behind; one already gone is fine."""
    with contextlib.suppress(OSError):
        os.unlink(tmp)
