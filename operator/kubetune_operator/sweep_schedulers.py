"""The sweep controller's view of a scheduler: which trial needs a decision, the
decision made from a trial's results, and the replay of recorded decisions.

Wraps the pure algorithms (kubetune_operator.sweeps: ASHA, PBT) in one shape:
a decision is the list `[seq, time, value, extra]` recorded on its trial; the
scheduler's state is exactly what replaying those lists in `seq` order
gives, so it is rebuilt from the trials after any restart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from kubetune_operator.sweep_plan import Trial, members
from kubetune_operator.sweeps import space as spaces
from kubetune_operator.sweeps.asha import STOP, Asha, MissingMetric
from kubetune_operator.sweeps.median import Median

SCHEDULERS = ("fifo", "median", "asha", "pbt")
# Median stopping reads every trial's results for a check: at most this often per trial.
MEDIAN_CHECK_S = 5.0


class SchedulerError(Exception):
    """A trial's results cannot be judged (e.g. the metric is missing)."""


def missing(exc: MissingMetric) -> str:
    """The words for a result without the key, the same wherever it is found."""
    return f"never reported {exc.key!r} (its results have {exc.available})"


def _settings(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    scheduler = spec.get("scheduler") or {}
    kind = str(scheduler.get("type") or "fifo")
    return kind, dict(scheduler.get(kind) or {})


def validate(spec: dict[str, Any]) -> str:
    """Why the sweep's spec cannot run (one line naming the field), or ""."""
    searcher = dict(spec.get("searcher") or {})
    kind = str(searcher.get("type") or "random")
    try:
        spaces.validate_searcher({"type": kind, "seed": searcher.get("seed", 0)})
        spaces.validate_space(spec.get("paramSpace") or {}, kind)
        spaces.trial_count(spec.get("paramSpace") or {}, int(spec.get("numSamples", 1)), kind)
    except (spaces.SpaceError, ValueError) as exc:
        return str(exc)
    template = (spec.get("jobTemplate") or {}).get("spec") or {}
    if bool(template.get("trainable")) == bool(template.get("code")):
        return "jobTemplate.spec: set exactly one of trainable or code"
    if "config" in template:
        return "jobTemplate.spec.config: the sweep sets each trial's config from paramSpace"
    if not str((template.get("storage") or {}).get("uri") or "").startswith("s3://"):
        return "jobTemplate.spec.storage.uri: must be s3://BUCKET[/PREFIX]"
    sched, _ = _settings(spec)
    if sched not in SCHEDULERS:
        return (
            f"scheduler.type {sched!r} is not supported here (use one of {', '.join(SCHEDULERS)})"
        )
    try:
        make_scheduler(spec)
    except (ValueError, TypeError) as exc:
        return f"scheduler.{sched}: {exc}"
    return ""


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
        # Given by the controller before deciding: a reader of a trial's
        # results, all trials, and a dict it keeps for this sweep between
        # reconciles (in memory only: nothing in it may decide anything).
        self.rows_of: Callable[[Trial], list[dict[str, Any]]] = lambda _: []
        self.trials: list[Trial] = []
        self.memory: dict[str, Any] = {}

    def config(self, index: int) -> dict[str, Any]:
        return spaces.trial_config(self.space, index, self.samples, self.seed, self.searcher)

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


class AshaScheduler(Scheduler):
    """Ray's ASHA: one decision per rung, at the trial's first result reaching it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        _, cfg = _settings(spec)
        self.time_attr = str(cfg.get("timeAttr") or "training_iteration")
        self.asha = Asha(
            metric=self.metric,
            mode=self.mode,
            time_attr=self.time_attr,
            grace_period=float(cfg.get("gracePeriod", 1)),
            reduction_factor=float(cfg.get("reductionFactor", 4)),
            max_t=float(cfg.get("maxT", 100)),
            brackets=int(cfg.get("brackets", 1)),
            seed=self.seed,
        )
        self._highest: dict[str, float] = {}  # trial -> highest rung it was recorded at

    def _feed(self, trial: Trial, result: dict[str, Any]) -> tuple[str, float | None]:
        action, milestone = self.asha.on_result(trial.name, result)
        if milestone is not None:
            self._highest[trial.name] = max(self._highest.get(trial.name, -math.inf), milestone)
        return action, milestone

    def replay(self, trial: Trial, decision: list[Any]) -> None:
        self._feed(trial, {self.time_attr: decision[1], self.metric: decision[2]})

    def due(self, trial: Trial) -> bool:
        rungs = self.asha.milestones[self.asha.bracket_of(trial.name)]
        done = self._highest.get(trial.name, -math.inf)
        return any(done < m <= trial.iteration and m < self.asha.max_t for m in rungs)

    def decide(
        self, trial: Trial, rows: list[dict[str, Any]], seq: int
    ) -> tuple[list[Any], str] | None:
        done = self._highest.get(trial.name, -math.inf)
        for row in rows:
            time = row.get(self.time_attr)
            if not isinstance(time, int | float) or time <= done:
                continue
            try:
                action, milestone = self._feed(trial, row)
            except MissingMetric as exc:
                raise SchedulerError(missing(exc)) from None
            if milestone is None:
                continue  # at maxT the trial ends by its own stop
            value = row[self.metric]
            reason = ""
            if action == STOP:
                reason = (
                    f"asha: {self.metric}={value:.6g} at {self.time_attr}={time:g} is below "
                    f"the cutoff of rung {milestone:g}"
                )
            return [seq, time, value, None], reason
        return None


class MedianScheduler(Scheduler):
    """Ray's median stopping rule: a trial whose best result is worse than the
    median of the other trials' running means (up to the same time) stops."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        _, cfg = _settings(spec)
        self.time_attr = str(cfg.get("timeAttr") or "training_iteration")
        self.settings: dict[str, Any] = {
            "metric": self.metric,
            "mode": self.mode,
            "time_attr": self.time_attr,
            "grace_period": float(cfg.get("gracePeriod", 1)),
            "min_samples_required": int(cfg.get("minSamplesRequired", 3)),
            "min_time_slice": float(cfg.get("minTimeSlice", 0)),
            "hard_stop": True,
        }
        Median(**self.settings)  # validates

    def due(self, trial: Trial) -> bool:
        checked = self.memory.setdefault("checked", {})
        last_iteration, last_time = checked.get(trial.name, (0, 0.0))
        return (
            trial.iteration >= self.settings["grace_period"]
            and trial.iteration > last_iteration
            and time.monotonic() - last_time >= MEDIAN_CHECK_S
        )

    def decide(
        self, trial: Trial, rows: list[dict[str, Any]], seq: int
    ) -> tuple[list[Any], str] | None:
        self.memory.setdefault("checked", {})[trial.name] = (trial.iteration, time.monotonic())
        rule = Median(**self.settings)
        try:
            for other in self.trials:
                if other.name != trial.name:
                    for row in self.rows_of(other):
                        rule.on_complete(other.name, row)
            for row in rows:
                if rule.on_result(trial.name, row) == "STOP":
                    value, when = row[self.metric], row[self.time_attr]
                    why = (
                        f"median: best {self.metric} by {self.time_attr}={when:g} is worse than "
                        "the median of the other trials' running means"
                    )
                    return [seq, when, value, None], why
        except MissingMetric as exc:
            raise SchedulerError(missing(exc)) from None
        return None


def make_scheduler(spec: dict[str, Any]) -> Scheduler:
    kind, _ = _settings(spec)
    if kind == "asha":
        return AshaScheduler(spec)
    if kind == "median":
        return MedianScheduler(spec)
    if kind == "pbt":
        from kubetune_operator.sweep_pbt import PbtScheduler

        return PbtScheduler(spec)
    return Scheduler(spec)


__all__ = ["Scheduler", "SchedulerError", "make_scheduler", "members", "validate"]
