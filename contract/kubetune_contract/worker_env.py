"""How the operator hands a job to a worker pod (one JSON environment
variable) and how the worker pushes its progress back (the URL, token and CA
the operator sets, the token's audience, the largest body it accepts)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "PROGRESS_AUDIENCE",
    "PROGRESS_CA_FILE_ENV",
    "PROGRESS_MAX_BODY",
    "PROGRESS_TOKEN_FILE_ENV",
    "PROGRESS_URL_ENV",
    "TERMINATION_MESSAGE_PATH",
    "WORKER_SPEC_ENV",
    "WorkerSpec",
]

# Where the worker writes its one-line reason on exit; the node agent (like the
# kubelet) copies it into containerStatuses[].state.terminated.message.
TERMINATION_MESSAGE_PATH = "/dev/termination-log"

# The job, as one JSON document (WorkerSpec.to_env()).
WORKER_SPEC_ENV = "KUBETUNE_WORKER_SPEC"

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
