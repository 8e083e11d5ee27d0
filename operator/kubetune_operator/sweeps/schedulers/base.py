"""The Scheduler interface the sweep controller drives, and FIFO (its own
implementation: no decisions); every other scheduler extends it.

A decision is the list `[seq, time, value, extra]` recorded on its trial; the
scheduler's state is exactly what replaying those lists in `seq` order gives,
so it is rebuilt from the trials after any restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubetune_operator.sweeps.algorithms import space as spaces
from kubetune_operator.sweeps.algorithms.objective import MissingMetric
from kubetune_operator.sweeps.plan import Trial


class SchedulerError(Exception):
    """A trial's results cannot be judged (e.g. the metric is missing)."""


def never_reported(exc: MissingMetric) -> str:
    """The words for a result without the key, the same wherever it is found."""
    return f"never reported {exc.key!r} (its results have {exc.available})"


def settings_of(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(the scheduler type the sweep names, its own settings `scheduler.<type>`)."""
    scheduler = spec.get("scheduler") or {}
    kind = str(scheduler.get("type") or "fifo")
    return kind, dict(scheduler.get(kind) or {})


class Scheduler:
    """FIFO: every trial runs to its own stop; no decisions."""

    def __init__(self, spec: dict[str, Any]) -> None:
        searcher = dict(spec.get("searcher") or {})
        self.searcher = str(searcher.get("type") or "random")
        self.seed = int(searcher.get("seed") or 0)
        self.space = dict(spec.get("paramSpace") or {})
        self.samples = int(spec.get("numSamples", 1))
        self.metric, self.mode = str(spec["metric"]), str(spec["mode"])
        self.total = spaces.trial_count(self.space, self.samples, self.searcher)
        _, self.options = settings_of(spec)
        self.time_attr = str(self.options.get("timeAttr") or "training_iteration")
        # Given by the controller before deciding: a reader of a trial's
        # results, all trials, and a dict it keeps for this sweep between
        # reconciles (in memory only: nothing in it may decide anything).
        self.rows_of: Callable[[Trial], list[dict[str, Any]]] = lambda _: []
        self.trials: list[Trial] = []
        self.memory: dict[str, Any] = {}

    def config(self, index: int) -> dict[str, Any]:
        return spaces.trial_config(self.space, index, self.samples, self.seed, self.searcher)

    def recorded(self, decision: list[Any]) -> dict[str, Any]:
        """The result a recorded decision was made from, as far as replay needs it."""
        return {self.time_attr: decision[1], self.metric: decision[2]}

    def replay(self, trial: Trial, decision: list[Any]) -> None:
        return None

    def due(self, trial: Trial) -> bool:
        return False

    def decide(
        self, trial: Trial, rows: list[dict[str, Any]], seq: int
    ) -> tuple[list[Any], str] | None:
        """A new decision [seq, time, value, extra] and, if it stops the trial, why."""
        return None

    def pending_exploit(self, trial: Trial) -> dict[str, Any] | None:
        return None

    def set_members(self, current: dict[int, Trial]) -> None:
        """The newest generation of each member, before any decision (PBT's donors)."""
        return None
