"""Ray Tune's function API: `report`, `get_checkpoint`, `get_context`. A
training function runs in the thread that runs the loop; each `report()` is
one iteration, handled by the loop before `report()` returns."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubetune.sdk.checkpoint_handle import Checkpoint
from kubetune.sdk.errors import describe
from kubetune.sdk.result_keys import TrialInfo
from kubetune.sdk.trainable import Trainable

logger = logging.getLogger("kubetune")


class StopTraining(BaseException):
    """Raised inside report() to unwind the training function once the loop
    decided to stop (as Ray raises SystemExit in its training thread). A
    BaseException so that `except Exception` in user code lets it through."""


@dataclass(eq=False)
class _Session:
    """What report() and friends talk to while a function runs under the loop."""

    on_report: Callable[[dict[str, Any], Checkpoint | None], None]
    trial_info: TrialInfo
    trial_dir: str
    storage_uri: str
    stop_requested: Callable[[], bool]
    checkpoint: Checkpoint | None = field(default=None, init=False)


_session: _Session | None = None
_warned_outside = False


def _set_session(session: _Session | None) -> None:
    global _session
    _session = session


def _outside(what: str) -> None:
    global _warned_outside
    if not _warned_outside:
        _warned_outside = True
        warnings.warn(
            f"kubetune.{what}() was called outside a run and does nothing: run the function "
            "with `kubetune run MODULE:FUNC` or kubetune.run(func)",
            stacklevel=3,
        )


def _reject_tensors(metrics: dict[str, Any]) -> None:
    for key, value in metrics.items():
        cls = type(value)
        if cls.__name__ == "Tensor" and cls.__module__.startswith("torch"):
            raise ValueError(
                f"report() got a torch.Tensor for {key!r}: pass a number, e.g. value.item()"
            )


def report(
    metrics: dict[str, Any] | None = None,
    *,
    checkpoint: Checkpoint | None = None,
    **legacy_metrics: Any,
) -> None:
    """Report one iteration's metrics (and optionally a checkpoint folder, committed
    to storage before report returns, so the caller may delete it afterwards).
    `report(loss=0.1)` (Ray 1.x style) is accepted too."""
    session = _session
    if session is None:
        _outside("report")
        return None
    if metrics is None:
        metrics = legacy_metrics
    elif legacy_metrics:
        raise TypeError("report() takes a metrics dict or keyword metrics, not both")
    if not isinstance(metrics, dict):
        raise TypeError(f"report() takes a dict of metrics, not {describe(metrics)}")
    if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
        raise TypeError(
            "report(checkpoint=...) takes a kubetune.Checkpoint, e.g. "
            f"Checkpoint.from_directory(path), not {describe(checkpoint)}"
        )
    _reject_tensors(metrics)
    session.on_report(metrics, checkpoint)
    return None


def get_checkpoint() -> Checkpoint | None:
    """The checkpoint this run restored from or, once report() committed one, the
    latest committed checkpoint; None when there is none."""
    session = _session
    if session is None:
        _outside("get_checkpoint")
        return None
    return session.checkpoint


class TuneContext:
    """Facts about the running trial (Ray's `tune.get_context()`)."""

    def _info(self) -> TrialInfo:
        return _session.trial_info if _session is not None else TrialInfo()

    def get_trial_name(self) -> str:
        return self._info().trial_name

    def get_trial_id(self) -> str:
        return self._info().trial_id

    def get_trial_resources(self) -> Any:
        return self._info().trial_resources

    def get_experiment_name(self) -> str:
        return self._info().experiment_name

    def get_trial_dir(self) -> str | None:
        return _session.trial_dir if _session is not None else None

    def get_storage(self) -> str | None:
        """The run folder's URI (Ray returns its StorageContext here)."""
        return _session.storage_uri if _session is not None else None

    def stop_requested(self) -> bool:
        """kubetune extension: True once the run was asked to stop (SIGTERM on a
        suspend or preemption). A function that sees it should report a
        checkpoint now: it is the last report before the pod goes."""
        return bool(_session is not None and _session.stop_requested())

    def get_metadata(self) -> dict[str, Any]:
        raise RuntimeError("get_metadata() is not available in Tune (nor in kubetune)")


_context = TuneContext()


def get_context() -> TuneContext:
    return _context


class FunctionTrainable(Trainable):
    """Holds a function run's counters so its results get exactly the class API's
    auto-filled keys; the loop feeds it reports instead of calling step()."""

    def setup(self, config: dict[str, Any]) -> None:
        self.loaded_checkpoint: Checkpoint | None = None

    def step(self) -> dict[str, Any]:
        raise NotImplementedError(
            "a function trainable is driven by kubetune.run (each report() is a step)"
        )

    def _load(self, checkpoint: Checkpoint) -> None:
        self.loaded_checkpoint = checkpoint

    def complete(self, metrics: dict[str, Any], start: float) -> dict[str, Any]:
        return self._complete(metrics, start)


def to_metrics(value: Any) -> dict[str, Any]:
    """A value a training function returned or yielded, as Ray reports it."""
    if isinstance(value, dict):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"a training function may return or yield a dict or a number, not {describe(value)}"
        )
    return {"_metric": value}
