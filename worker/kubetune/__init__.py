"""kubetune: Ray Tune's Trainable and function APIs, run as Kubernetes jobs.

Moving a Ray Tune trainable over is one line: `from ray import tune` becomes
`import kubetune as tune` (or `from kubetune import tune`)."""

from __future__ import annotations

from kubetune import schedulers
from kubetune.runtime.api import run
from kubetune.runtime.outcome import RunFailed, RunResult
from kubetune.sdk.checkpoint import Checkpoint, TrainingResult
from kubetune.sdk.checkpoint_config import CheckpointConfig
from kubetune.sdk.errors import (
    InvalidCheckpoint,
    InvalidSettings,
    InvalidTrainable,
    KubetuneError,
)
from kubetune.sdk.function import TuneContext, get_checkpoint, get_context, report
from kubetune.sdk.stopping import FunctionStopper, Stopper
from kubetune.sdk.storage_context import StorageContext
from kubetune.sdk.trainable import Trainable
from kubetune.sdk.version import VERSION as __version__
from kubetune.sdk.with_parameters import with_parameters
from kubetune.search import choice, grid_search, loguniform, quniform, randint, uniform


def __getattr__(name: str) -> object:
    # The client's names (kubetune.submit, kubetune.Job ...) import the Kubernetes
    # client: loaded on first use, so a worker or a local run never pays for it.
    if name in __all__:
        from kubetune import client

        return getattr(client, name)
    raise AttributeError(f"module 'kubetune' has no attribute {name!r}")


__all__ = [
    "Checkpoint",
    "CheckpointConfig",
    "ClusterError",
    "FunctionStopper",
    "InvalidCheckpoint",
    "InvalidSettings",
    "InvalidTrainable",
    "Job",
    "JobFailed",
    "KubetuneError",
    "NotFound",
    "ResultGrid",
    "RunConfig",
    "RunFailed",
    "RunResult",
    "Stopper",
    "StorageContext",
    "SweepFailed",
    "Trainable",
    "TrainingResult",
    "TuneConfig",
    "TuneContext",
    "Tuner",
    "WaitTimeout",
    "__version__",
    "choice",
    "get_checkpoint",
    "get_context",
    "grid_search",
    "loguniform",
    "quniform",
    "randint",
    "report",
    "run",
    "schedulers",
    "submit",
    "uniform",
    "with_parameters",
]
