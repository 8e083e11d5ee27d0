"""The run's progress sink: every result goes to the writer thread (kubetune.
runtime.persist), and the progress document (kubetune_contract.Progress) is
built from the run state and handed over at the loop's ticks, after each
checkpoint and at the end, so the operator and the person watching see the
run as it is."""

from __future__ import annotations

import time

from kubetune.runtime.display import Reporter
from kubetune.runtime.persist import Persister
from kubetune.runtime.progress_builder import build_progress
from kubetune.runtime.state import RunState
from kubetune.sdk.checkpoint_config import CheckpointConfig
from kubetune.storage.checkpoints import CheckpointInfo, pick_best
from kubetune_contract import EXIT_REASONS, RUNNING, Progress


class ProgressSink:
    """`add` is the per-iteration path (the writer's own encoder: no wrapper);
    `tick` is called when the loop's clock passes `next_tick`."""

    def __init__(
        self,
        persister: Persister,
        state: RunState,
        *,
        run_id: str | None,
        checkpoint: CheckpointConfig,
        reporter: Reporter,
        progress_interval_s: float,
    ) -> None:
        self.persister = persister
        self.add = persister.add
        self.state = state
        self.run_id = run_id
        self.checkpoint = checkpoint
        self.reporter = reporter
        self.interval_s = progress_interval_s
        self.next_tick = 0.0
        self._next_progress = 0.0

    def best(self) -> CheckpointInfo | None:
        """The best checkpoint by the score attribute, None without one."""
        attr = self.checkpoint.checkpoint_score_attribute
        if not attr or not self.state.checkpoints:
            return None
        return pick_best(self.state.checkpoints, attr, self.checkpoint.score_order)

    def tick(self) -> None:
        """Show progress (a few times a second on a terminal) and hand the
        operator a document every `progress_interval_s`; raise a write error
        the writer thread kept."""
        now = time.monotonic()
        self.next_tick = now + (0.2 if self.reporter.live else self.interval_s)
        if self.persister.error is not None:
            raise self.persister.error
        state = self.state
        self.reporter.progress(state.iteration, state.last_result, state.latest)
        if now >= self._next_progress:
            self.submit()

    def submit(self) -> None:
        """Hand over the running document now."""
        self._next_progress = time.monotonic() + self.interval_s
        latest = self.state.latest
        message = f"iteration {self.state.iteration}" + (
            f", checkpoint {latest.iteration}" if latest else ""
        )
        self.persister.submit_progress(self.document(RUNNING, None, message))

    def checkpoint_committed(self) -> None:
        self.submit()
        self.persister.checkpoint_committed()

    def document(self, state: str, code: int | None, message: str) -> Progress:
        run = self.state
        best = self.best()
        return build_progress(
            run_id=self.run_id,
            state=state,
            reason=EXIT_REASONS.get(code, "") if code is not None else "",
            message=message,
            iteration=run.iteration,
            last_result=run.last_result,
            latest=run.latest.to_status() if run.latest else None,
            best=best.to_status() if best else None,
            checkpoints=[c.to_status() for c in run.checkpoints],
            restored_from=run.restored_from,
            failures=run.failures,
        )

    def close(self, state: str, code: int, message: str) -> None:
        """The final document, then every pending write; raises what fails."""
        self.persister.submit_progress(self.document(state, code, message))
        self.persister.close()

    def flush(self) -> None:
        self.persister.flush()

    def begin(self, iteration: int) -> None:
        """An attempt continues after `iteration`: its first result ticks at once."""
        self.persister.begin(iteration)
        self.next_tick = 0.0
