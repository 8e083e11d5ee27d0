"""`from kubetune import tune`: the same names as `import kubetune as tune`, for
code written as `from ray import tune`."""

from kubetune import (
    Checkpoint,
    CheckpointConfig,
    FunctionStopper,
    Stopper,
    Trainable,
    TuneContext,
    get_checkpoint,
    get_context,
    report,
    run,
    with_parameters,
)

__all__ = [
    "Checkpoint",
    "CheckpointConfig",
    "FunctionStopper",
    "Stopper",
    "Trainable",
    "TuneContext",
    "get_checkpoint",
    "get_context",
    "report",
    "run",
    "with_parameters",
]
