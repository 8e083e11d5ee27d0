"""Driving a training function: it runs in the loop's thread, and each
`report()` calls back into the loop, which handles the result (and commits a
reported checkpoint) before `report()` returns."""

from __future__ import annotations

import copy
import inspect
import time
from typing import TYPE_CHECKING, Any

import kubetune_contract as contract
from kubetune.runtime.outcome import Outcome, RunOptions, UserError
from kubetune.runtime.persist import Persister
from kubetune.runtime.signals import StopSignals
from kubetune.sdk.checkpoint import Checkpoint
from kubetune.sdk.errors import InvalidTrainable, KubetuneError
from kubetune.sdk.function import (
    FunctionTrainable,
    StopTraining,
    _Session,
    _set_session,
    to_metrics,
)
from kubetune.sdk.stopping import StopCriteria
from kubetune.storage import StorageError
from kubetune.storage.checkpoints import CheckpointError, CheckpointInfo, RunConflictError, RunStore


class FunctionDriver:
    """The Runner's half that runs training functions (a mixin of Runner)."""

    trainable: Any
    opts: RunOptions
    signals: StopSignals
    criteria: StopCriteria
    store: RunStore | None
    persister: Persister | None
    book: list[CheckpointInfo]
    iteration: int
    last_result: dict[str, Any] | None
    _outcome: Outcome | None
    _fatal: BaseException | None
    _session: _Session | None
    _ft: FunctionTrainable | None
    _last_report: float
    _next_tick: float

    if TYPE_CHECKING:

        def _commit(
            self, folder: str, iteration: int, result: dict[str, Any]
        ) -> CheckpointInfo: ...

        def _tick(self) -> None: ...

        def _unsaved(self, why: str) -> Outcome: ...

    def _drive_function(self, ft: FunctionTrainable) -> Outcome:
        assert self.store is not None
        session = _Session(
            on_report=self._on_report,
            trial_info=ft._trial_info,
            trial_dir=ft.logdir,
            storage_uri=self.store.storage.uri,
            stop_requested=lambda: self.signals.requested,
        )
        session.checkpoint = ft.loaded_checkpoint
        self._session, self._ft = session, ft
        self._outcome = self._fatal = None
        self._last_report = time.time()
        _set_session(session)
        out: Any = None
        try:
            out = self.trainable(copy.deepcopy(ft.config))
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
        if self.last_result:  # Ray replays the last result with done=True, unlogged
            self.last_result = {**self.last_result, "done": True}
        return Outcome(
            contract.EXIT_OK, f"the training function returned at iteration {ft.iteration}"
        )

    def _returned(self, value: Any) -> dict[str, Any]:
        try:
            return to_metrics(value)
        except ValueError as exc:
            raise InvalidTrainable(str(exc)) from None

    def _on_report(self, metrics: dict[str, Any], checkpoint: Checkpoint | None) -> None:
        if self._outcome is not None or self._fatal is not None:
            raise StopTraining()
        try:
            ft = self._ft
            assert ft is not None and self._session is not None
            result = ft.complete(metrics, self._last_report)
            it = self.iteration = ft.iteration
            result["checkpoint_dir_name"] = (
                contract.checkpoint_dirname(it) if checkpoint is not None else None
            )
            if checkpoint is not None:
                result["should_checkpoint"] = True
            reason = self.criteria.check(result)
            if reason is not None:
                result["done"] = True
            assert self.persister is not None
            self.persister.add(result)
            self.last_result = result
            if checkpoint is not None:
                with checkpoint.as_directory() as folder:
                    info = self._commit(folder, it, result)
                self._session.checkpoint = Checkpoint(
                    info.path, endpoint_url=self.opts.endpoint_url
                )
            if reason is not None:
                self._outcome = Outcome(contract.EXIT_OK, f"{reason} at iteration {it}")
            elif self.signals.requested:
                self._outcome = self._stop_function(it)
            elif time.monotonic() >= self._next_tick:
                self._tick()
        except KubetuneError as exc:
            self._fatal = exc
        except (StorageError, CheckpointError, RunConflictError) as exc:
            self._fatal = exc
        finally:
            self._last_report = time.time()
        if self._outcome is not None or self._fatal is not None:
            raise StopTraining()

    def _stop_function(self, iteration: int) -> Outcome:
        latest = self.book[-1] if self.book else None
        if latest is not None and latest.iteration == iteration:
            return Outcome(
                contract.EXIT_STOPPED,
                f"stopped on {self.signals.signame} at iteration {iteration}; "
                f"checkpoint {latest.path}",
            )
        return self._unsaved(
            "a training function saves only what it reports: report a checkpoint when "
            "kubetune.get_context().stop_requested() is True"
        )
