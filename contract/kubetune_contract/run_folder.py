"""The run folder, `<storage uri>/<namespace>/<name>/`: the names of what the
worker writes there, and the only places either side accepts a checkpoint or
shipped code from."""

from __future__ import annotations

import re

__all__ = [
    "CHECKPOINT_MANIFEST",
    "CHECKPOINT_PREFIX",
    "CODE_DIR",
    "PARAMS_FILE",
    "PROGRESS_FILE",
    "RESULTS_DIR",
    "RESULT_FILE",
    "RUN_FILE",
    "checkpoint_dirname",
    "code_key",
    "code_uri",
    "is_own_checkpoint",
    "is_sha256_hex",
    "is_within_run",
]

PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"
CHECKPOINT_PREFIX = "checkpoint_"
# Written last into a checkpoint folder; a checkpoint without it does not exist.
CHECKPOINT_MANIFEST = ".kubetune-manifest.json"
# Identity of the run that owns the folder (its uid), written before anything else.
RUN_FILE = ".kubetune/run.json"
# Overwritten by the worker as it goes: last result, latest/best/kept
# checkpoints, state. The operator reads only this to fill the job's status.
PROGRESS_FILE = ".kubetune/progress.json"
# The results as the worker writes them: immutable segments, read with
# kubetune.storage.results.read_results (result.json is assembled from them).
RESULTS_DIR = ".kubetune/results/"
# A trainable shipped by value (spec.code): cloudpickle bytes at
# CODE_DIR<sha256 hex>.pkl in the job's own run folder, nowhere else.
CODE_DIR = ".kubetune/code/"


def checkpoint_dirname(iteration: int) -> str:
    return f"{CHECKPOINT_PREFIX}{iteration:06d}"


# --- code shipped by value (spec.code) ---------------------------------------
# Unpickling runs code, so both sides accept one exact place for it: the job's
# own run folder, under a name that is the digest of its bytes.
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def is_sha256_hex(value: object) -> bool:
    """Whether value is a sha256 digest as hashlib's hexdigest() writes it."""
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


def code_key(sha256: str) -> str:
    """Where shipped code with this digest lives, relative to the run folder."""
    return f"{CODE_DIR}{sha256}.pkl"


def code_uri(run_uri: str, sha256: str) -> str:
    """The full URI of shipped code with this digest in the run folder run_uri."""
    return f"{run_uri.rstrip('/')}/{code_key(sha256)}"


def is_within_run(run_uri: str, uri: str) -> bool:
    """Whether uri is exactly `<run_uri>/.kubetune/code/<64 hex>.pkl`: no `..`,
    no other bucket or prefix, no sibling folder sharing a prefix (`a/bc` is
    not inside `a/b`). The operator refuses, and the worker never unpickles,
    anything else."""
    if not isinstance(run_uri, str) or not isinstance(uri, str):
        return False
    base = run_uri.rstrip("/")
    if not base or base.endswith(":"):
        return False  # no run folder at all ("", "s3://")
    head = f"{base}/{CODE_DIR}"
    if not uri.startswith(head):
        return False
    name = uri[len(head) :]
    return name.endswith(".pkl") and is_sha256_hex(name[: -len(".pkl")])


_CHECKPOINT_NAME = re.compile(r"checkpoint_\d{6,}")


def is_own_checkpoint(run_uri: str, path: object) -> bool:
    """Whether path is a checkpoint folder directly in the run folder run_uri."""
    base = run_uri.rstrip("/") + "/"
    return (
        isinstance(path, str)
        and path.startswith(base)
        and _CHECKPOINT_NAME.fullmatch(path[len(base) :]) is not None
    )
