"""Driving a Trainable subclass: the hot loop (train, record, stop by
criteria, checkpoint by policy), saves through the checkpoint keeper, and the
save-then-stop a signal asks for."""

from __future__ import annotations

import shutil
import tempfile
import time
from typing import Any

from kubetune.runtime.disk import disk_full
from kubetune.runtime.outcome import Outcome, UserError, no_report
from kubetune.runtime.parts import RunParts
from kubetune.sdk.checkpoint_config import wants_checkpoint
from kubetune.sdk.errors import LocalDiskFull, StepResultError, is_disk_full, one_line
from kubetune.sdk.function import _Session, _set_session
from kubetune.sdk.result_keys import RESULT_DUPLICATE
from kubetune.sdk.trainable import Trainable
from kubetune.storage import StorageError
from kubetune.storage.checkpoints import CheckpointError, CheckpointInfo
from kubetune_contract import EXIT_OK


class ClassDriver:
    def __init__(self, parts: RunParts, frequency: int, at_end: bool) -> None:
        self.parts = parts
        self.frequency = frequency
        self.at_end = at_end

    def drive(self, t: Trainable) -> Outcome:
        # get_context() works in a class trainable too; a long step() may poll
        # stop_requested() to end early on a SIGTERM.
        signals = self.parts.signals
        _set_session(
            _Session(
                on_report=no_report,
                trial_info=t._trial_info,
                trial_dir=t.logdir,
                storage_uri=self.parts.storage_uri,
                stop_requested=lambda: signals.requested,
            )
        )
        try:
            return self._loop(t)
        finally:
            _set_session(None)

    def _loop(self, t: Trainable) -> Outcome:
        parts = self.parts
        state, sink = parts.state, parts.sink
        train = t.train
        add = sink.add
        check = parts.criteria.check
        frequency, at_end = self.frequency, self.at_end
        signals = parts.signals
        clock = time.monotonic
        while True:
            if signals.requested:
                return self._stop(t)
            try:
                result = train()
            except StepResultError:
                raise
            except Exception as exc:
                raise UserError(exc) from exc
            if RESULT_DUPLICATE in result:  # Ray's "no new result": the last one, done
                final = dict(state.last_result or {})
                final["done"] = True
                state.last_result = final
                return Outcome(EXIT_OK, f"the trainable finished at iteration {t.iteration}")
            reason = check(result)
            if reason is not None:
                result = dict(result)  # done=True for the loop; the trainable's copy keeps False
                result["done"] = True
            add(result)
            state.last_result = result
            state.iteration = t.iteration
            if reason is not None:
                if at_end or wants_checkpoint(result, frequency, False):
                    self.save(t, result)
                return Outcome(EXIT_OK, f"{reason} at iteration {t.iteration}")
            if (frequency or "should_checkpoint" in result) and wants_checkpoint(
                result, frequency, False
            ):
                self.save(t, result)
            if clock() >= sink.next_tick:
                sink.tick()

    def save(self, t: Trainable, result: dict[str, Any]) -> CheckpointInfo:
        local = tempfile.mkdtemp(prefix="kubetune-save-")
        try:
            try:
                t.save(local)
            except Exception as exc:
                # The disk, not the trainable: a clear line, the previous checkpoint
                # untouched (nothing was uploaded), a failure the next attempt resumes.
                if is_disk_full(exc):
                    raise disk_full(f"writing checkpoint {t.iteration} to", local) from exc
                raise UserError(exc) from exc
            return self.parts.keeper.commit(local, t.iteration, result)
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def _stop(self, t: Trainable) -> Outcome:
        parts = self.parts
        latest = parts.state.latest
        if latest is None or latest.iteration != t.iteration:
            try:
                latest = self.save(t, parts.state.last_result or {})
            except UserError as exc:
                parts.state.error = exc.original
                return parts.unsaved(f"saving the checkpoint failed: {exc}")
            except (StorageError, CheckpointError) as exc:
                parts.state.error = exc
                return parts.unsaved(f"saving the checkpoint failed: {one_line(exc)}")
            except LocalDiskFull as exc:
                parts.state.error = exc
                return parts.unsaved(str(exc))
        return parts.stopped(t.iteration, latest)
