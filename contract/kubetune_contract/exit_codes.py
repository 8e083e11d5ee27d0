"""Exit codes of `kubetune run` and of the worker pod, and the reason each is
shown as: the operator decides from these alone whether a pod's end is
success, a retryable failure, a hopeless input or a requested stop."""

from __future__ import annotations

__all__ = [
    "EXIT_BAD_CHECKPOINT",
    "EXIT_BAD_TRAINABLE",
    "EXIT_DISK_FULL",
    "EXIT_OK",
    "EXIT_REASONS",
    "EXIT_RUN_CONFLICT",
    "EXIT_STOPPED",
    "EXIT_STOP_UNSAVED",
    "EXIT_STORAGE",
    "EXIT_TRAINABLE_ERROR",
    "EXIT_USAGE",
    "HOPELESS_EXIT_CODES",
]

# The operator decides from these alone whether a pod's end is success, a
# retryable failure, a hopeless input or a requested stop.
EXIT_OK = 0  # stop criterion reached or the trainable said done
EXIT_TRAINABLE_ERROR = 1  # user code raised in setup/step/save: retried up to maxFailures
EXIT_USAGE = 2  # bad command line or worker settings
EXIT_BAD_TRAINABLE = 3  # MODULE:ATTR does not import, or is neither a Trainable nor a function
EXIT_BAD_CHECKPOINT = 4  # restore_from missing, incomplete, or fails to load
EXIT_STORAGE = 5  # bucket missing, credentials refused, endpoint unreachable
EXIT_RUN_CONFLICT = 6  # the run folder belongs to another run (a different uid)
EXIT_DISK_FULL = 7  # the local disk filled while a checkpoint was written or fetched: retried
EXIT_STOPPED = 75  # stopped on request (SIGTERM) and a complete checkpoint was saved
EXIT_STOP_UNSAVED = 76  # stopped on request but no checkpoint could be saved

HOPELESS_EXIT_CODES = frozenset(
    {EXIT_USAGE, EXIT_BAD_TRAINABLE, EXIT_BAD_CHECKPOINT, EXIT_STORAGE, EXIT_RUN_CONFLICT}
)

EXIT_REASONS = {
    EXIT_OK: "Completed",
    EXIT_TRAINABLE_ERROR: "TrainableError",
    EXIT_USAGE: "InvalidSettings",
    EXIT_BAD_TRAINABLE: "InvalidTrainable",
    EXIT_BAD_CHECKPOINT: "InvalidCheckpoint",
    EXIT_STORAGE: "StorageError",
    EXIT_RUN_CONFLICT: "RunFolderConflict",
    EXIT_DISK_FULL: "LocalDiskFull",
    EXIT_STOPPED: "StoppedWithCheckpoint",
    EXIT_STOP_UNSAVED: "StoppedWithoutCheckpoint",
}
