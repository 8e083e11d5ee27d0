"""Errors the SDK raises on bad input, each carrying the exit code the command
line and the worker pod end with, so one mapping serves both."""

from __future__ import annotations

import errno
from typing import Any

import kubetune_contract as contract


class KubetuneError(Exception):
    """A problem the user must fix; str(err) is one line naming it and the fix."""

    exit_code = contract.EXIT_TRAINABLE_ERROR


class InvalidSettings(KubetuneError, ValueError):
    """Bad command line, run options or worker spec."""

    exit_code = contract.EXIT_USAGE


class MissingMetric(InvalidSettings):
    """A setting names a metric (a stop criterion, the checkpoint score attribute)
    that the trainable's results do not carry, so the setting could never act:
    the run ends at the first result that shows it, as Ray's trial runner did,
    instead of training (and holding its GPU) forever."""


class InvalidTrainable(KubetuneError):
    """MODULE:ATTR does not import, or is neither a Trainable nor a function, or
    step() broke the contract (returned a non-dict)."""

    exit_code = contract.EXIT_BAD_TRAINABLE


class InvalidCheckpoint(KubetuneError):
    """The checkpoint to restore is missing, incomplete, or fails to load."""

    exit_code = contract.EXIT_BAD_CHECKPOINT


class LocalDiskFull(KubetuneError):
    """The worker's local disk (its staging folder, TMPDIR) filled up while it
    wrote or fetched a checkpoint. Retried like a crash, under a code of its own
    so status names the disk rather than the trainable: the next attempt, maybe
    on a pod with room, resumes from the latest complete checkpoint, which the
    full disk never touched; past maxFailures the job fails with this message."""

    exit_code = contract.EXIT_DISK_FULL


# ENOSPC: the filesystem is full; EDQUOT: the user's quota on it is.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    """True when `exc`, or an error it wraps or was raised from, says the disk is full."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            return True
        todo += [err.__cause__, err.__context__, getattr(err, "original", None)]
    return False


def disk_full_message(doing: str, folder: str, free: int | None, total: int | None) -> str:
    """One line naming the full disk and the fix, e.g. `No space left on device
    while writing checkpoint 20 to /tmp/kubetune-save-x (0 B free of 16.0 MiB) ...`."""
    room = f" ({_size(free)} free of {_size(total)})" if free is not None and total else ""
    return (
        f"No space left on device while {doing} {folder}{room}: give the worker more "
        "local disk (resources ephemeral-storage, an emptyDir sizeLimit) or point TMPDIR "
        "at a larger volume"
    )


def _size(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


class StepResultError(AssertionError):
    """step() returned something other than a dict. An AssertionError, as in Ray,
    so code that catches Ray's assertion keeps working."""


def one_line(exc: BaseException) -> str:
    """`Type: message` on one line, the form every exit message uses for an error."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def describe(value: Any) -> str:
    """A short type name for messages ("int", "list", "MyClass")."""
    return type(value).__name__
