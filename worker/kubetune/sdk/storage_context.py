"""Where a class trainable run by kubetune lives (`StorageContext`: its run
folder and its local working folder) and the `logdir` it gets, kept apart from
the Trainable's hooks and counters (kubetune.sdk.trainable)."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass


@dataclass
class StorageContext:
    """Where a trainable run by kubetune lives: the run folder (local path or S3
    URI) and a local working folder that becomes its `logdir`."""

    trial_fs_path: str
    trial_working_directory: str
    endpoint_url: str | None = None


def make_logdir(storage: StorageContext | None) -> str:
    """The trainable's `logdir`: the working folder of its StorageContext
    (created), or a new folder under the temporary folder when it has none."""
    if storage is not None:
        folder = storage.trial_working_directory
        os.makedirs(folder, exist_ok=True)
        os.environ.setdefault("TUNE_ORIG_WORKING_DIR", os.getcwd())
        # Ray chdirs here by default; kubetune keeps the cwd so relative data paths
        # behave as in a plain script, unless the user opts in.
        if os.environ.get("KUBETUNE_CHDIR_TO_TRIAL_DIR") == "1":
            os.chdir(folder)
        return folder
    # Ray uses ~/ray_results; a hyphenated name never shadows the package on sys.path.
    base = os.path.join(tempfile.gettempdir(), "kubetune-logdirs")
    os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix=time.strftime("%Y-%m-%d_%H-%M-%S_"), dir=base)
