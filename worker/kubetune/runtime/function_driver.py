"""Driving a training function: it runs in the loop's thread, and each
`report()` calls back into the driver, which records the result (and commits
a reported checkpoint through the keeper) before `report()` returns."""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable
from typing import Any

from kubetune.runtime.outcome import Outcome, UserError
from kubetune.runtime.parts import RunParts
from kubetune.sdk.checkpoint_handle import Checkpoint
from kubetune.sdk.errors import InvalidTrainable, KubetuneError
from kubetune.sdk.function import (
    FunctionTrainable,
    StopTraining,
    _Session,
    _set_session,
    to_metrics,
)
from kubetune.sdk.trainable import Trainable
from kubetune.storage import StorageError
from kubetune.storage.checkpoints import CheckpointError
from kubetune.storage.runfolder import RunConflictError
from kubetune_contract import EXIT_OK, checkpoint_dirname


class FunctionDriver:
    def __init__(self, parts: RunParts, function: Callable[..., Any]) -> None:
        self.parts = parts
        self.function = function
        self._ft: FunctionTrainable | None = None
        self._session: _Session | None = None
        self._outcome: Outcome | None = None
        self._fatal: BaseException | None = None
        self._last_report = 0.0

    def drive(self, ft: Trainable) -> Outcome:
        assert isinstance(ft, FunctionTrainable)  # the loop makes one for a function
        signals = self.parts.signals
        session = _Session(
            on_report=self._on_report,
            trial_info=ft._trial_info,
            trial_dir=ft.logdir,
            storage_uri=self.parts.storage_uri,
            stop_requested=lambda: signals.requested,
        )
        session.checkpoint = ft.loaded_checkpoint
        self._session, self._ft = session, ft
        self._outcome = self._fatal = None
        self._last_report = time.time()
        _set_session(session)
        out: Any = None
        try:
            out = self.function(copy.deepcopy(ft.config))
            if inspect.isgenerator(out):
                for value in out:
                    self._on_report(self._returned(value), None)
            elif out is not None:
                self._on_report(self._returned(out), None)
        except StopTraining:
            pass
        except KubetuneError:
            raise
        except Exception as exc:
            if self._fatal is None:
                raise UserError(exc) from exc
        finally:
            if inspect.isgenerator(out):
                out.close()  # runs the generator's finally blocks
            _set_session(None)
        if self._fatal is not None:
            raise self._fatal
        if self._outcome is not None:
            return self._outcome
        state = self.parts.state
        if state.last_result:  # Ray replays the last result with done=True, unlogged
            state.last_result = {**state.last_result, "done": True}
        return Outcome(EXIT_OK, f"the training function returned at iteration {ft.iteration}")

    def _returned(self, value: Any) -> dict[str, Any]:
        try:
            return to_metrics(value)
        except ValueError as exc:
            raise InvalidTrainable(str(exc)) from None

    def _on_report(self, metrics: dict[str, Any], checkpoint: Checkpoint | None) -> None:
        if self._outcome is not None or self._fatal is not None:
            raise StopTraining()
        parts = self.parts
        state = parts.state
        try:
            ft = self._ft
            assert ft is not None and self._session is not None
            result = ft.complete(metrics, self._last_report)
            it = state.iteration = ft.iteration
            result["checkpoint_dir_name"] = (
                checkpoint_dirname(it) if checkpoint is not None else None
            )
            if checkpoint is not None:
                result["should_checkpoint"] = True
            reason = parts.criteria.check(result)
            if reason is not None:
                result["done"] = True
            parts.sink.add(result)
            state.last_result = result
            if checkpoint is not None:
                with checkpoint.as_directory() as folder:
                    info = parts.keeper.commit(folder, it, result)
                self._session.checkpoint = Checkpoint(
                    info.path, endpoint_url=parts.opts.endpoint_url
                )
            if reason is not None:
                self._outcome = Outcome(EXIT_OK, f"{reason} at iteration {it}")
            elif parts.signals.requested:
                self._outcome = self._stop(it)
            elif time.monotonic() >= parts.sink.next_tick:
                parts.sink.tick()
        except KubetuneError as exc:
            self._fatal = exc
        except (StorageError, CheckpointError, RunConflictError) as exc:
            self._fatal = exc
        finally:
            self._last_report = time.time()
        if self._outcome is not None or self._fatal is not None:
            raise StopTraining()

    def _stop(self, iteration: int) -> Outcome:
        latest = self.parts.state.latest
        if latest is not None and latest.iteration == iteration:
            return self.parts.stopped(iteration, latest)
        return self.parts.unsaved(
            "a training function saves only what it reports: report a checkpoint when "
            "kubetune.get_context().stop_requested() is True"
        )
