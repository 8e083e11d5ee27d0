"""A full local disk named as such: which folder, how full its filesystem is,
and what to give the worker, so status never blames the trainable for it."""

from __future__ import annotations

import contextlib
import os

from kubetune.sdk.errors import LocalDiskFull, disk_full_message


def disk_full(doing: str, folder: str) -> LocalDiskFull:
    """LocalDiskFull naming `folder` and how full its filesystem is."""
    free = total = None
    with contextlib.suppress(OSError):
        st = os.statvfs(folder if os.path.isdir(folder) else os.path.dirname(folder))
        free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    return LocalDiskFull(disk_full_message(doing, folder, free, total))
