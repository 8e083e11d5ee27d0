"""kubetune: Ray Tune's Trainable and function APIs, run as Kubernetes jobs.

Moving a Ray Tune trainable over is one line: `from ray import tune` becomes
`import kubetune as tune` (or `from kubetune import tune`)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kubetune.sdk.version import VERSION as __version__

if TYPE_CHECKING:  # what type checkers and editors see; at run time, _HOMES
    from kubetune import schedulers
    from kubetune.client import (
        ClusterError,
        Job,
        JobFailed,
        NotFound,
        ResultGrid,
        RunConfig,
        SweepFailed,
        TuneConfig,
        Tuner,
        WaitTimeout,
        submit,
    )
    from kubetune.runtime.api import run
    from kubetune.runtime.outcome import RunFailed, RunResult
    from kubetune.sdk.checkpoint_config import CheckpointConfig
    from kubetune.sdk.checkpoint_handle import Checkpoint, TrainingResult
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
    from kubetune.sdk.with_parameters import with_parameters
    from kubetune.search import choice, grid_search, loguniform, quniform, randint, uniform

# Each public name's module, imported on first use: `import kubetune.storage`
# (what the operator does) loads no runtime, and a worker or a local run never
# loads the Kubernetes client that kubetune.submit and kubetune.Tuner need. The
# names of __all__ not listed here are the client's (kubetune.client).
_HOMES = {
    "run": "kubetune.runtime.api",
    "RunFailed": "kubetune.runtime.outcome",
    "RunResult": "kubetune.runtime.outcome",
    "Checkpoint": "kubetune.sdk.checkpoint_handle",
    "TrainingResult": "kubetune.sdk.checkpoint_handle",
    "CheckpointConfig": "kubetune.sdk.checkpoint_config",
    "InvalidCheckpoint": "kubetune.sdk.errors",
    "InvalidSettings": "kubetune.sdk.errors",
    "InvalidTrainable": "kubetune.sdk.errors",
    "KubetuneError": "kubetune.sdk.errors",
    "TuneContext": "kubetune.sdk.function",
    "get_checkpoint": "kubetune.sdk.function",
    "get_context": "kubetune.sdk.function",
    "report": "kubetune.sdk.function",
    "FunctionStopper": "kubetune.sdk.stopping",
    "Stopper": "kubetune.sdk.stopping",
    "StorageContext": "kubetune.sdk.storage_context",
    "Trainable": "kubetune.sdk.trainable",
    "with_parameters": "kubetune.sdk.with_parameters",
    **dict.fromkeys(
        ("choice", "grid_search", "loguniform", "quniform", "randint", "uniform"),
        "kubetune.search",
    ),
}
_SUBMODULES = ("schedulers",)  # Ray's `tune.schedulers.ASHAScheduler`


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"kubetune.{name}")
    home = _HOMES.get(name, "kubetune.client" if name in __all__ else None)
    if home is None:
        raise AttributeError(f"module 'kubetune' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups are plain module attributes
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES, *__all__, *_SUBMODULES})


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
