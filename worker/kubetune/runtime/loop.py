"""The training loop a worker pod runs (and `kubetune run` / `kubetune.run` run
in-process): restore, train, persist every result, checkpoint by policy,
stop by criteria or signal, retry failures from the latest checkpoint, and
keep the progress file the operator reads up to date."""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kubetune_contract as contract
from kubetune.runtime.display import summarize
from kubetune.runtime.function_driver import FunctionDriver
from kubetune.runtime.outcome import (
    Outcome,
    RunOptions,
    RunResult,
    UserError,
    no_report,
    state_of,
)
from kubetune.runtime.persist import Persister
from kubetune.runtime.progress import build_progress
from kubetune.runtime.push import ProgressPusher
from kubetune.runtime.tracebacks import format_user_traceback
from kubetune.sdk.checkpoint import Checkpoint, TrainingResult, is_remote
from kubetune.sdk.checkpoint_config import wants_checkpoint
from kubetune.sdk.errors import (
    InvalidCheckpoint,
    InvalidTrainable,
    KubetuneError,
    LocalDiskFull,
    StepResultError,
    disk_full_message,
    is_disk_full,
)
from kubetune.sdk.errors import one_line as _one_line
from kubetune.sdk.function import FunctionTrainable, _Session, _set_session
from kubetune.sdk.metric_names import missing_metric
from kubetune.sdk.result_keys import RESULT_DUPLICATE, TRIAL_INFO, TrialInfo, lookup
from kubetune.sdk.stopping import StopCriteria
from kubetune.sdk.trainable import StorageContext, Trainable, implements_save
from kubetune.storage import StorageError, open_storage
from kubetune.storage.checkpoints import (
    CheckpointError,
    CheckpointInfo,
    RunConflictError,
    RunStore,
    download_checkpoint,
    open_checkpoint,
    pick_best,
)
from kubetune_contract import RUNNING

__all__ = ["RunOptions", "RunResult", "Runner"]


class Runner(FunctionDriver):
    """One run. execute() never raises for an outcome it can name (it returns it),
    except KeyboardInterrupt from a second signal in library use."""

    def __init__(self, trainable: Any, opts: RunOptions) -> None:
        self.trainable = trainable
        self.is_function = not (inspect.isclass(trainable) and issubclass(trainable, Trainable))
        self.opts = opts
        self.reporter = opts.reporter
        self.signals = opts.signals
        self.criteria = StopCriteria(opts.stop)
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
        self.store: RunStore | None = None
        self.persister: Persister | None = None
        self.book: list[CheckpointInfo] = []
        self.last_result: dict[str, Any] | None = None
        self.iteration = 0
        self.failures = 0
        self.restored_from: str | None = None
        self.source: CheckpointInfo | None = None
        self._initial_source: CheckpointInfo | None = None
        self._claimed = False
        self._instance: Trainable | None = None
        self._restore_dir: str | None = None
        self._trial_tmp: str | None = None  # an S3 run's local logdir, removed at teardown
        self._outcome: Outcome | None = None
        self._fatal: BaseException | None = None
        self._next_tick = 0.0
        self._next_progress = 0.0
        self._score_seen = False  # the score attribute was in a checkpoint's result
        self._error: BaseException | None = None
        self._session: _Session | None = None
        self._ft: FunctionTrainable | None = None
        self._last_report = 0.0
        if self.is_function and (cfg.checkpoint_frequency or cfg.checkpoint_at_end):
            self.reporter.event(
                "checkpoint frequency and at-end apply to class trainables only: a training "
                "function saves by passing checkpoint= to kubetune.report()"
            )

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
            outcome = Outcome(
                contract.EXIT_STOP_UNSAVED, f"interrupted at iteration {self.iteration}"
            )
        except BaseException as exc:
            outcome = self._classify(exc)
        try:
            outcome = self._close(outcome)
        finally:
            self.signals.restore()
        result = self._result(outcome)
        if interrupted is not None:
            raise interrupted
        return result

    def _classify(self, exc: BaseException) -> Outcome:
        self._error = exc.original if isinstance(exc, UserError) else exc
        if isinstance(exc, UserError):
            return Outcome(
                contract.EXIT_TRAINABLE_ERROR,
                f"{exc} (after {self.failures} failure(s), max_failures={self.opts.max_failures})",
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
        return Outcome(contract.EXIT_TRAINABLE_ERROR, f"internal error: {_one_line(exc)}")

    def _open(self) -> None:
        storage = open_storage(
            self.opts.storage,
            endpoint_url=self.opts.endpoint_url,
            outage_s=self.opts.storage_outage_s,
        )
        storage.check()
        store = RunStore(storage)
        store.claim(self.opts.run_id)
        self.store, self._claimed = store, True
        # Started first so that any failure from here on ends with a final progress file.
        self.persister = Persister(
            store,
            interval_s=self.opts.flush_interval_s,
            heartbeat_s=self.opts.heartbeat_s,
            pusher=ProgressPusher.from_env(),
        )
        self.persister.start()
        store.write_params(self.opts.config)
        self.book = store.list_checkpoints()
        if self.book:
            self.source = self.book[-1]
            note = (
                " (restore_from is ignored: the run continues itself)"
                if self.opts.restore_from
                else ""
            )
            self.reporter.event(
                f"resuming from {self.source.path} (iteration {self.source.iteration}){note}"
            )
        elif self.opts.restore_from:
            try:
                self.source = open_checkpoint(
                    self.opts.restore_from, endpoint_url=self.opts.endpoint_url
                )
            except CheckpointError as exc:
                raise InvalidCheckpoint(str(exc)) from None
            self.reporter.event(
                f"restoring from {self.source.path} (iteration {self.source.iteration})"
            )
        self._initial_source = self.source
        self._submit_progress()

    def _train_with_retries(self) -> Outcome:
        if self.source is not None:
            reached = self.criteria.met_by(self.source.metrics)
            if reached:
                assert self.persister is not None
                self.persister.begin(self.source.iteration)
                self.iteration = self.source.iteration
                self.last_result = dict(self.source.metrics)
                self.restored_from = self.source.path
                return Outcome(contract.EXIT_OK, f"{reached} at the checkpoint resumed from")
        while True:
            try:
                return self._attempt()
            except UserError as exc:
                sys.stderr.write(format_user_traceback(exc.original))
                if self.signals.requested:
                    self._error = exc.original
                    return self._unsaved(f"the trainable failed while stopping: {exc}")
                self.failures += 1
                limit = self.opts.max_failures
                if 0 <= limit < self.failures:
                    raise
                self._teardown()
                self.source = self.book[-1] if self.book else self._initial_source
                where = f"from {self.source.path}" if self.source else "from the beginning"
                cap = "unlimited" if limit < 0 else str(limit)
                self.reporter.event(
                    f"trainable failed ({exc}); retry {self.failures} of {cap} {where}"
                )

    # --- one attempt: create, restore, drive ------------------------------------------
    def _attempt(self) -> Outcome:
        assert self.store is not None
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
        self.iteration = 0
        if self.source is not None:
            self._restore(instance, self.source)
        self.iteration = instance.iteration
        assert self.persister is not None
        # Results after this iteration replace what an earlier attempt stored.
        self.persister.begin(self.iteration)
        self._next_tick = 0.0
        if self.is_function:
            assert isinstance(instance, FunctionTrainable)
            return self._drive_function(instance)
        return self._drive_class(instance)

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
                raise _disk_full(f"downloading checkpoint {info.path} to", local) from exc
            raise
        metrics = {**info.metrics, "training_iteration": info.iteration}
        try:
            instance.restore(TrainingResult(Checkpoint.from_directory(local), metrics))
        except Exception as exc:
            raise InvalidCheckpoint(
                f"checkpoint {info.path} fails to load: {_one_line(exc)}; check that this "
                "trainable's save_checkpoint() wrote it, or restore another checkpoint"
            ) from exc
        self.restored_from = info.path
        if not self.is_function:  # a function reads it later through get_checkpoint()
            shutil.rmtree(local, ignore_errors=True)
            self._restore_dir = None

    def _teardown(self) -> None:
        instance, self._instance = self._instance, None
        if instance is not None:
            try:
                instance.stop()
            except Exception as exc:
                self.reporter.event(f"cleanup() failed: {_one_line(exc)}")
        for folder in (self._restore_dir, self._trial_tmp):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        self._restore_dir = self._trial_tmp = None

    # --- class trainables: the hot loop ------------------------------------------------
    def _drive_class(self, t: Trainable) -> Outcome:
        assert self.persister is not None and self.store is not None
        # get_context() works in a class trainable too; a long step() may poll
        # stop_requested() to end early on a SIGTERM.
        _set_session(
            _Session(
                on_report=no_report,
                trial_info=t._trial_info,
                trial_dir=t.logdir,
                storage_uri=self.store.storage.uri,
                stop_requested=lambda: self.signals.requested,
            )
        )
        try:
            return self._class_loop(t)
        finally:
            _set_session(None)

    def _class_loop(self, t: Trainable) -> Outcome:
        assert self.persister is not None
        train = t.train
        add = self.persister.add
        check = self.criteria.check
        frequency, at_end = self.frequency, self.at_end
        signals = self.signals
        clock = time.monotonic
        while True:
            if signals.requested:
                return self._stop_class(t)
            try:
                result = train()
            except StepResultError:
                raise
            except Exception as exc:
                raise UserError(exc) from exc
            if RESULT_DUPLICATE in result:  # Ray's "no new result": the last one, done
                final = dict(self.last_result or {})
                final["done"] = True
                self.last_result = final
                return Outcome(
                    contract.EXIT_OK, f"the trainable finished at iteration {t.iteration}"
                )
            reason = check(result)
            if reason is not None:
                result = dict(result)  # done=True for the loop; the trainable's copy keeps False
                result["done"] = True
            add(result)
            self.last_result = result
            self.iteration = t.iteration
            if reason is not None:
                if at_end or wants_checkpoint(result, frequency, False):
                    self._save_class(t, result)
                return Outcome(contract.EXIT_OK, f"{reason} at iteration {t.iteration}")
            if (frequency or "should_checkpoint" in result) and wants_checkpoint(
                result, frequency, False
            ):
                self._save_class(t, result)
            if clock() >= self._next_tick:
                self._tick()

    def _save_class(self, t: Trainable, result: dict[str, Any]) -> CheckpointInfo:
        local = tempfile.mkdtemp(prefix="kubetune-save-")
        try:
            try:
                t.save(local)
            except Exception as exc:
                # The disk, not the trainable: a clear line, the previous checkpoint
                # untouched (nothing was uploaded), a failure the next attempt resumes.
                if is_disk_full(exc):
                    raise _disk_full(f"writing checkpoint {t.iteration} to", local) from exc
                raise UserError(exc) from exc
            return self._commit(local, t.iteration, result)
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def _stop_class(self, t: Trainable) -> Outcome:
        latest = self.book[-1] if self.book else None
        if latest is None or latest.iteration != t.iteration:
            try:
                latest = self._save_class(t, self.last_result or {})
            except UserError as exc:
                self._error = exc.original
                return self._unsaved(f"saving the checkpoint failed: {exc}")
            except (StorageError, CheckpointError) as exc:
                self._error = exc
                return self._unsaved(f"saving the checkpoint failed: {_one_line(exc)}")
            except LocalDiskFull as exc:
                self._error = exc
                return self._unsaved(str(exc))
        return Outcome(
            contract.EXIT_STOPPED,
            f"stopped on {self.signals.signame} at iteration {t.iteration}; "
            f"checkpoint {latest.path}",
        )

    def _unsaved(self, why: str) -> Outcome:
        latest = self.book[-1] if self.book else None
        tail = (
            f"; the latest complete checkpoint is {latest.path} (iteration {latest.iteration})"
            if latest
            else "; there is no complete checkpoint"
        )
        return Outcome(
            contract.EXIT_STOP_UNSAVED,
            f"stopped on {self.signals.signame or 'request'} at iteration {self.iteration}: "
            f"{why}{tail}",
        )

    # --- checkpoints, progress -----------------------------------------------------
    def _commit(self, folder: str, iteration: int, result: dict[str, Any]) -> CheckpointInfo:
        assert self.store is not None and self.persister is not None
        self.persister.flush()  # the results hold the checkpoint's iteration before it exists
        info = self.store.commit_checkpoint(Path(folder), iteration, result)
        self.book = [c for c in self.book if c.iteration != iteration] + [info]
        self.book.sort(key=lambda c: c.iteration)
        cfg = self.opts.checkpoint
        attr = cfg.checkpoint_score_attribute
        if attr and result and not self._score_seen:
            if not lookup(info.metrics, attr)[0]:
                # Checked after the commit, so the checkpoint is kept for a restore
                # once the name is fixed; before any pruning ranks by it.
                raise missing_metric(
                    "checkpoint score attribute", attr, result, "the first checkpoint's result"
                )
            self._score_seen = True
        if cfg.num_to_keep:
            deleted = {
                c.iteration for c in self.store.prune(cfg.num_to_keep, attr, cfg.score_order)
            }
            self.book = [c for c in self.book if c.iteration not in deleted]
        self.reporter.event(f"checkpoint {info.path} (iteration {iteration})")
        self._submit_progress()
        self.persister.checkpoint_committed()
        return info

    def _tick(self) -> None:
        now = time.monotonic()
        self._next_tick = now + (0.2 if self.reporter.live else self.opts.progress_interval_s)
        assert self.persister is not None
        if self.persister.error is not None:
            raise self.persister.error
        self.reporter.progress(
            self.iteration, self.last_result, self.book[-1] if self.book else None
        )
        if now >= self._next_progress:
            self._submit_progress()

    def _progress_doc(self, state: str, code: int | None, message: str) -> dict[str, Any]:
        cfg = self.opts.checkpoint
        attr = cfg.checkpoint_score_attribute
        best = pick_best(self.book, attr, cfg.score_order) if attr else None
        return build_progress(
            run_id=self.store.run_id if self.store else self.opts.run_id,
            state=state,
            reason=contract.EXIT_REASONS.get(code, "") if code is not None else "",
            message=message,
            iteration=self.iteration,
            last_result=self.last_result,
            latest=self.book[-1].to_status() if self.book else None,
            best=best.to_status() if best else None,
            checkpoints=[c.to_status() for c in self.book],
            restored_from=self.restored_from,
            failures=self.failures,
        )

    def _submit_progress(self) -> None:
        assert self.persister is not None
        self._next_progress = time.monotonic() + self.opts.progress_interval_s
        latest = self.book[-1] if self.book else None
        message = f"iteration {self.iteration}" + (
            f", checkpoint {latest.iteration}" if latest else ""
        )
        self.persister.submit_progress(self._progress_doc(RUNNING, None, message))

    # --- the end ---------------------------------------------------------------------
    def _close(self, outcome: Outcome) -> Outcome:
        """Stop the trainable, flush results, write the final progress. A storage
        error here turns a success into a storage failure; it never hides an
        earlier failure."""
        self._teardown()
        if self.last_result:
            latest = self.book[-1] if self.book else None
            self.reporter.event("final: " + summarize(self.iteration, self.last_result, latest))
        if self.persister is None or not self._claimed:
            return outcome
        try:
            self.persister.submit_progress(
                self._progress_doc(state_of(outcome.code), outcome.code, outcome.message)
            )
            self.persister.close()
        except BaseException as exc:
            if outcome.code in (contract.EXIT_OK, contract.EXIT_STOPPED):
                self._error = exc
                return Outcome(contract.EXIT_STORAGE, f"writing results failed: {_one_line(exc)}")
        return outcome

    def _result(self, outcome: Outcome) -> RunResult:
        cfg = self.opts.checkpoint
        attr = cfg.checkpoint_score_attribute
        best = pick_best(self.book, attr, cfg.score_order) if (attr and self.book) else None
        ep = self.opts.endpoint_url

        def handle(info: CheckpointInfo | None) -> Checkpoint | None:
            return Checkpoint(info.path, endpoint_url=ep) if info else None

        return RunResult(
            state=state_of(outcome.code),
            exit_code=outcome.code,
            reason=contract.EXIT_REASONS.get(outcome.code, "Error"),
            message=outcome.message,
            metrics=self.last_result,
            checkpoint=handle(self.book[-1] if self.book else None),
            best_checkpoint=handle(best),
            checkpoints=list(self.book),
            path=self.store.storage.uri if self.store else self.opts.storage,
            iteration=self.iteration,
            failures=self.failures,
            restored_from=self.restored_from,
            error=self._error,
        )


def _disk_full(doing: str, folder: str) -> LocalDiskFull:
    """LocalDiskFull naming `folder` and how full its filesystem is."""
    free = total = None
    with contextlib.suppress(OSError):
        st = os.statvfs(folder if os.path.isdir(folder) else os.path.dirname(folder))
        free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    return LocalDiskFull(disk_full_message(doing, folder, free, total))
