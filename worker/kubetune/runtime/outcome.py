"""What a run is given and what it ends with: its options, its result, and the
small types the loop passes around on the way."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import kubetune_contract as contract
from kubetune.runtime.display import Reporter
from kubetune.runtime.signals import StopSignals
from kubetune.runtime.tracebacks import format_user_traceback
from kubetune.sdk.checkpoint_config import CheckpointConfig
from kubetune.sdk.checkpoint_handle import Checkpoint
from kubetune.sdk.errors import KubetuneError, StepResultError, one_line
from kubetune.storage import StorageError
from kubetune.storage.checkpoints import CheckpointError, CheckpointInfo
from kubetune.storage.runfolder import RunConflictError
from kubetune_contract import COMPLETED, FAILED, STOPPED


@dataclass
class RunOptions:
    name: str
    storage: str
    config: dict[str, Any]
    stop: Any
    checkpoint: CheckpointConfig
    restore_from: str | None = None
    max_failures: int = 0
    run_id: str | None = None
    endpoint_url: str | None = None
    reporter: Reporter = field(default_factory=Reporter)
    signals: StopSignals = field(default_factory=StopSignals)
    progress_interval_s: float = 0.5
    flush_interval_s: float = 1.0
    heartbeat_s: float = 30.0
    # S3 that answered before and stops answering (a server restart, a network
    # blip) is retried this long before the run fails with a StorageError.
    storage_outage_s: float = 300.0


@dataclass
class RunResult:
    """How a run ended: its state, exit code and message, final result, checkpoints."""

    state: str  # completed, stopped or failed
    exit_code: int
    reason: str
    message: str
    metrics: dict[str, Any] | None
    checkpoint: Checkpoint | None  # the latest complete one
    best_checkpoint: Checkpoint | None
    checkpoints: list[CheckpointInfo]
    path: str
    iteration: int = 0
    failures: int = 0
    restored_from: str | None = None
    error: BaseException | None = None

    @property
    def last_result(self) -> dict[str, Any] | None:
        return self.metrics

    @property
    def ok(self) -> bool:
        return self.exit_code == contract.EXIT_OK


class UserError(Exception):
    """An exception from the trainable's own code (setup, step, save, the function)."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(one_line(exc))
        self.original = exc


@dataclass
class Outcome:
    code: int
    message: str


def no_report(metrics: dict[str, Any], checkpoint: Checkpoint | None) -> None:
    raise TypeError(
        "kubetune.report() is for training functions: a Trainable's step() returns its "
        "metrics, and save_checkpoint() writes its checkpoints"
    )


def state_of(code: int) -> str:
    if code == contract.EXIT_OK:
        return COMPLETED
    if code in (contract.EXIT_STOPPED, contract.EXIT_STOP_UNSAVED):
        return STOPPED
    return FAILED


class RunFailed(KubetuneError):
    """Raised by `kubetune.run` when the run ends failed; `.result` holds the outcome."""

    def __init__(self, message: str, result: RunResult, exit_code: int) -> None:
        super().__init__(message)
        self.result = result
        self.exit_code = exit_code


def classify(exc: BaseException, failures: int, max_failures: int) -> Outcome:
    """How a run ends when `exc` ended it: the exit code its kind maps to and
    one line; anything unforeseen is an internal error, its traceback printed."""
    if isinstance(exc, UserError):
        return Outcome(
            contract.EXIT_TRAINABLE_ERROR,
            f"{exc} (after {failures} failure(s), max_failures={max_failures})",
        )
    if isinstance(exc, KubetuneError):
        return Outcome(exc.exit_code, str(exc))
    if isinstance(exc, StepResultError):
        return Outcome(contract.EXIT_BAD_TRAINABLE, str(exc))
    if isinstance(exc, StorageError):
        return Outcome(contract.EXIT_STORAGE, str(exc))
    if isinstance(exc, RunConflictError):
        return Outcome(contract.EXIT_RUN_CONFLICT, str(exc))
    if isinstance(exc, CheckpointError):
        return Outcome(contract.EXIT_BAD_CHECKPOINT, str(exc))
    if isinstance(exc, SystemExit):
        return Outcome(contract.EXIT_TRAINABLE_ERROR, f"the trainable called exit({exc.code})")
    sys.stderr.write(format_user_traceback(exc, keep_all=True))
    return Outcome(contract.EXIT_TRAINABLE_ERROR, f"internal error: {one_line(exc)}")
