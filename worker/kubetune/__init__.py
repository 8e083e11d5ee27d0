"""kubetune: Ray Tune's Trainable and function APIs, run as Kubernetes jobs.

Moving a Ray Tune trainable over is one line: `from ray import tune` becomes
`import kubetune as tune` (or `from kubetune import tune`)."""

from __future__ import annotations

__version__ = "0.1.0"

from kubetune.api import run
from kubetune.checkpoint_dir import Checkpoint, TrainingResult
from kubetune.errors import (
    InvalidCheckpoint,
    InvalidSettings,
    InvalidTrainable,
    KubetuneError,
    RunFailed,
)
from kubetune.function import TuneContext, get_checkpoint, get_context, report
from kubetune.outcome import RunResult
from kubetune.policy import CheckpointConfig
from kubetune.stopping import FunctionStopper, Stopper
from kubetune.trainable import StorageContext, Trainable, with_parameters

__all__ = [
    "Checkpoint",
    "CheckpointConfig",
    "FunctionStopper",
    "InvalidCheckpoint",
    "InvalidSettings",
    "InvalidTrainable",
    "KubetuneError",
    "RunFailed",
    "RunResult",
    "Stopper",
    "StorageContext",
    "Trainable",
    "TrainingResult",
    "TuneContext",
    "__version__",
    "get_checkpoint",
    "get_context",
    "report",
    "run",
    "with_parameters",
]
