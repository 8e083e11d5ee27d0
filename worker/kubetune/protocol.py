"""The contract the worker and the operator both speak: exit codes, file names
in the run folder, and how the operator hands a job to a worker pod.

This module imports nothing but the standard library, so the operator can use
it without pulling in the SDK's runtime, and the worker never imports the
operator.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

# --- exit codes of `kubetune run` and of the worker pod -----------------------
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

# --- the run folder: <storage uri>/<namespace>/<name>/ -------------------------
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
# kubetune.results.read_results (result.json is assembled from them).
RESULTS_DIR = ".kubetune/results/"
# A trainable shipped by value (spec.code): cloudpickle bytes at
# CODE_DIR<sha256 hex>.pkl in the job's own run folder, nowhere else.
CODE_DIR = ".kubetune/code/"

# Where the worker writes its one-line reason on exit; the node agent (like the
# kubelet) copies it into containerStatuses[].state.terminated.message.
TERMINATION_MESSAGE_PATH = "/dev/termination-log"


def checkpoint_dirname(iteration: int) -> str:
    return f"{CHECKPOINT_PREFIX}{iteration:06d}"


# --- code shipped by value (spec.code) --------------------------------------------
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


# --- how the operator hands a job to the worker ------------------------------
WORKER_SPEC_ENV = "KUBETUNE_WORKER_SPEC"

# --- how the worker pushes its progress to the operator ----------------------
# The operator sets these in the worker pod: the URL to POST the progress
# document to, the projected service-account token (for PROGRESS_AUDIENCE
# only) to send as a bearer token, and optionally the CA of an https URL.
PROGRESS_URL_ENV = "KUBETUNE_PROGRESS_URL"
PROGRESS_TOKEN_FILE_ENV = "KUBETUNE_PROGRESS_TOKEN_FILE"
PROGRESS_CA_FILE_ENV = "KUBETUNE_PROGRESS_CA_FILE"
PROGRESS_AUDIENCE = "kubetune.io/progress"
PROGRESS_MAX_BODY = 64 * 1024  # bytes of one report; the operator refuses more


@dataclass
class WorkerSpec:
    """Everything a worker pod needs, carried in one JSON environment variable."""

    trainable: str
    run_uri: str  # the job's own folder: <storage.uri>/<namespace>/<name>
    run_id: str  # the job's uid: guards the folder against another run
    config: dict[str, Any] = field(default_factory=dict)
    stop: dict[str, float] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)  # frequency, atEnd, numToKeep, ...
    restore_from: str | None = None
    endpoint_url: str | None = None
    max_failures: int = 0  # in-process retries; the operator restarts pods for the rest
    # A trainable shipped by value: {uri, sha256, python}; then `trainable` is
    # only a display name (may be ""). None: `trainable` is MODULE:ATTR.
    code: dict[str, Any] | None = None

    def to_env(self) -> str:
        doc = asdict(self)
        if doc["code"] is None:
            del doc["code"]  # a spec without shipped code stays readable by older workers
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WorkerSpec:
        raw = (environ if environ is not None else os.environ).get(WORKER_SPEC_ENV)
        if not raw:
            raise ValueError(f"{WORKER_SPEC_ENV} is not set: the worker needs its job spec")
        data = json.loads(raw)
        return cls(**data)
