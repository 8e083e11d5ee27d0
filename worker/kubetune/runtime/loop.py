"""The training loop a worker pod runs (and `kubetune run` / `kubetune.run`
run in-process). It only sequences the run's parts: open the run folder,
restore, hand each attempt to the driver for the trainable's kind (class or
function), retry failures from the latest checkpoint, and close with a final
progress document. The parts (kubetune.runtime.parts) do the work."""

from __future__ import annotations

import copy
import inspect
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from kubetune.runtime.class_driver import ClassDriver
from kubetune.runtime.disk import disk_full
from kubetune.runtime.display import summarize
from kubetune.runtime.function_driver import FunctionDriver
from kubetune.runtime.keeper import CheckpointKeeper
from kubetune.runtime.outcome import (
    Outcome,
    RunOptions,
    RunResult,
    UserError,
    classify,
    state_of,
)
from kubetune.runtime.parts import RunParts
from kubetune.runtime.persist import Persister
from kubetune.runtime.push import ProgressPusher
from kubetune.runtime.sink import ProgressSink
from kubetune.runtime.state import RunState
from kubetune.runtime.tracebacks import format_user_traceback
from kubetune.sdk.checkpoint_handle import Checkpoint, TrainingResult, is_remote
from kubetune.sdk.errors import (
    InvalidCheckpoint,
    InvalidTrainable,
    is_disk_full,
    one_line,
)
from kubetune.sdk.function import FunctionTrainable
from kubetune.sdk.result_keys import TRIAL_INFO, TrialInfo
from kubetune.sdk.stopping import StopCriteria
from kubetune.sdk.trainable import StorageContext, Trainable, implements_save
from kubetune.storage import open_storage
from kubetune.storage.checkpoints import (
    CheckpointError,
    CheckpointInfo,
    download_checkpoint,
    open_checkpoint,
)
from kubetune.storage.runfolder import RunStore
from kubetune_contract import (
    EXIT_OK,
    EXIT_REASONS,
    EXIT_STOP_UNSAVED,
    EXIT_STOPPED,
    EXIT_STORAGE,
)

__all__ = ["RunOptions", "RunResult", "Runner"]


class Runner:
    """One run. execute() never raises for an outcome it can name (it returns it),
    except KeyboardInterrupt from a second signal in library use."""

    def __init__(self, trainable: Any, opts: RunOptions) -> None:
        self.trainable = trainable
        self.is_function = not (inspect.isclass(trainable) and issubclass(trainable, Trainable))
        self.opts = opts
        self.reporter = opts.reporter
        self.signals = opts.signals
        cfg = opts.checkpoint
        self.frequency = 0 if self.is_function else (cfg.checkpoint_frequency or 0)
        can_save = not self.is_function and implements_save(trainable)
        # Unset at_end means "at the end if the class can save" (Ray's Tuner default).
        self.at_end = can_save and cfg.at_end_for(False)
        if not self.is_function and not can_save and (self.frequency or cfg.checkpoint_at_end):
            raise InvalidTrainable(
                f"checkpoints were asked for, but {trainable.__name__} does not implement "
                "save_checkpoint() (and load_checkpoint()): implement them, or drop the "
                "checkpoint frequency / at-end settings"
            )
        if self.is_function and (cfg.checkpoint_frequency or cfg.checkpoint_at_end):
            self.reporter.event(
                "checkpoint frequency and at-end apply to class trainables only: a training "
                "function saves by passing checkpoint= to kubetune.report()"
            )
        self.criteria = StopCriteria(opts.stop)  # refuses bad criteria before the run starts
        self.state = RunState()
        # Set by _open(), in this order: a run that fails earlier has none of them.
        self.store: RunStore | None = None
        self.sink: ProgressSink | None = None
        self.parts: RunParts | None = None
        self.driver: ClassDriver | FunctionDriver | None = None
        self.source: CheckpointInfo | None = None  # what the next attempt restores
        self._initial_source: CheckpointInfo | None = None
        self._instance: Trainable | None = None
        self._restore_dir: str | None = None
        self._trial_tmp: str | None = None  # an S3 run's local logdir, removed at teardown

    # --- the whole run --------------------------------------------------------------
    def execute(self) -> RunResult:
        outcome: Outcome
        interrupted: BaseException | None = None
        self.signals.install()
        try:
            self._open()
            outcome = self._train_with_retries()
        except KeyboardInterrupt as exc:
            interrupted = exc
            outcome = Outcome(EXIT_STOP_UNSAVED, f"interrupted at iteration {self.state.iteration}")
        except BaseException as exc:
            self.state.error = exc.original if isinstance(exc, UserError) else exc
            outcome = classify(exc, self.state.failures, self.opts.max_failures)
        try:
            outcome = self._close(outcome)
        finally:
            self.signals.restore()
        result = self._result(outcome)
        if interrupted is not None:
            raise interrupted
        return result

    def _open(self) -> None:
        opts = self.opts
        storage = open_storage(
            opts.storage, endpoint_url=opts.endpoint_url, outage_s=opts.storage_outage_s
        )
        storage.check()
        store = RunStore(storage)
        store.claim(opts.run_id)
        self.store = store
        # Started first so that any failure from here on ends with a final progress file.
        persister = Persister(
            store,
            interval_s=opts.flush_interval_s,
            heartbeat_s=opts.heartbeat_s,
            pusher=ProgressPusher.from_env(),
        )
        self.sink = sink = ProgressSink(
            persister,
            self.state,
            run_id=store.run_id,
            checkpoint=opts.checkpoint,
            reporter=self.reporter,
            progress_interval_s=opts.progress_interval_s,
        )
        persister.start()
        keeper = CheckpointKeeper(store, self.state, sink, opts.checkpoint, self.reporter)
        self.parts = parts = RunParts(
            opts=opts,
            state=self.state,
            keeper=keeper,
            sink=sink,
            criteria=self.criteria,
            signals=self.signals,
            reporter=self.reporter,
            storage_uri=storage.uri,
        )
        self.driver = (
            FunctionDriver(parts, self.trainable)
            if self.is_function
            else ClassDriver(parts, self.frequency, self.at_end)
        )
        store.write_params(opts.config)
        self.state.checkpoints = store.list_checkpoints()
        latest = self.state.latest
        if latest is not None:
            self.source = latest
            note = (
                " (restore_from is ignored: the run continues itself)" if opts.restore_from else ""
            )
            self.reporter.event(f"resuming from {latest.path} (iteration {latest.iteration}){note}")
        elif opts.restore_from:
            try:
                self.source = open_checkpoint(opts.restore_from, endpoint_url=opts.endpoint_url)
            except CheckpointError as exc:
                raise InvalidCheckpoint(str(exc)) from None
            self.reporter.event(
                f"restoring from {self.source.path} (iteration {self.source.iteration})"
            )
        self._initial_source = self.source
        sink.submit()

    def _train_with_retries(self) -> Outcome:
        assert self.parts is not None and self.sink is not None
        state = self.state
        if self.source is not None:
            reached = self.parts.criteria.met_by(self.source.metrics)
            if reached:
                self.sink.begin(self.source.iteration)
                state.iteration = self.source.iteration
                state.last_result = dict(self.source.metrics)
                state.restored_from = self.source.path
                return Outcome(EXIT_OK, f"{reached} at the checkpoint resumed from")
        while True:
            try:
                return self._attempt()
            except UserError as exc:
                sys.stderr.write(format_user_traceback(exc.original))
                if self.signals.requested:
                    state.error = exc.original
                    return self.parts.unsaved(f"the trainable failed while stopping: {exc}")
                state.failures += 1
                limit = self.opts.max_failures
                if 0 <= limit < state.failures:
                    raise
                self._teardown()
                self.source = state.latest or self._initial_source
                where = f"from {self.source.path}" if self.source else "from the beginning"
                cap = "unlimited" if limit < 0 else str(limit)
                self.reporter.event(
                    f"trainable failed ({exc}); retry {state.failures} of {cap} {where}"
                )

    # --- one attempt: create, restore, drive ------------------------------------------
    def _attempt(self) -> Outcome:
        assert self.store is not None and self.sink is not None and self.driver is not None
        info = TrialInfo(
            experiment_name=self.opts.name,
            trial_name=self.opts.name,
            trial_id=self.store.run_id or "default",
        )
        config = copy.deepcopy(self.opts.config)
        config[TRIAL_INFO] = info
        if is_remote(self.store.storage.uri):
            working = self._trial_tmp = tempfile.mkdtemp(prefix="kubetune-trial-")
        else:
            working = os.path.join(self.store.storage.uri, "artifacts")
        context = StorageContext(self.store.storage.uri, working, self.opts.endpoint_url)
        cls = FunctionTrainable if self.is_function else self.trainable
        try:
            instance = cls(config, context)
        except Exception as exc:
            raise UserError(exc) from exc
        self._instance = instance
        self.state.iteration = 0
        if self.source is not None:
            self._restore(instance, self.source)
        self.state.iteration = instance.iteration
        # Results after this iteration replace what an earlier attempt stored.
        self.sink.begin(self.state.iteration)
        return self.driver.drive(instance)

    def _restore(self, instance: Trainable, info: CheckpointInfo) -> None:
        local = tempfile.mkdtemp(prefix="kubetune-restore-")
        self._restore_dir = local
        try:
            download_checkpoint(info.path, Path(local), endpoint_url=self.opts.endpoint_url)
        except CheckpointError as exc:
            raise InvalidCheckpoint(str(exc)) from None
        except Exception as exc:
            # A full disk is not a bad checkpoint: say which disk.
            if is_disk_full(exc):
                raise disk_full(f"downloading checkpoint {info.path} to", local) from exc
            raise
        metrics = {**info.metrics, "training_iteration": info.iteration}
        try:
            instance.restore(TrainingResult(Checkpoint.from_directory(local), metrics))
        except Exception as exc:
            raise InvalidCheckpoint(
                f"checkpoint {info.path} fails to load: {one_line(exc)}; check that this "
                "trainable's save_checkpoint() wrote it, or restore another checkpoint"
            ) from exc
        self.state.restored_from = info.path
        if not self.is_function:  # a function reads it later through get_checkpoint()
            shutil.rmtree(local, ignore_errors=True)
            self._restore_dir = None

    def _teardown(self) -> None:
        instance, self._instance = self._instance, None
        if instance is not None:
            try:
                instance.stop()
            except Exception as exc:
                self.reporter.event(f"cleanup() failed: {one_line(exc)}")
        for folder in (self._restore_dir, self._trial_tmp):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        self._restore_dir = self._trial_tmp = None

    # --- the end ---------------------------------------------------------------------
    def _close(self, outcome: Outcome) -> Outcome:
        """Stop the trainable, flush results, write the final progress. A storage
        error here turns a success into a storage failure; it never hides an
        earlier failure."""
        self._teardown()
        state = self.state
        if state.last_result:
            summary = summarize(state.iteration, state.last_result, state.latest)
            self.reporter.event("final: " + summary)
        if self.sink is None:
            return outcome
        try:
            self.sink.close(state_of(outcome.code), outcome.code, outcome.message)
        except BaseException as exc:
            if outcome.code in (EXIT_OK, EXIT_STOPPED):
                state.error = exc
                return Outcome(EXIT_STORAGE, f"writing results failed: {one_line(exc)}")
        return outcome

    def _result(self, outcome: Outcome) -> RunResult:
        state = self.state
        best = self.sink.best() if self.sink else None
        ep = self.opts.endpoint_url

        def handle(info: CheckpointInfo | None) -> Checkpoint | None:
            return Checkpoint(info.path, endpoint_url=ep) if info else None

        return RunResult(
            state=state_of(outcome.code),
            exit_code=outcome.code,
            reason=EXIT_REASONS.get(outcome.code, "Error"),
            message=outcome.message,
            metrics=state.last_result,
            checkpoint=handle(state.latest),
            best_checkpoint=handle(best),
            checkpoints=list(state.checkpoints),
            path=self.store.storage.uri if self.store else self.opts.storage,
            iteration=state.iteration,
            failures=state.failures,
            restored_from=state.restored_from,
            error=state.error,
        )
