"""The early-stopping schedulers: ASHA and the median stopping rule decide,
from a trial's results, whether it stops before its own stop criterion."""

from __future__ import annotations

import math
import time
from typing import Any

from kubetune_operator.sweeps.algorithms.asha import STOP, Asha
from kubetune_operator.sweeps.algorithms.median import Median
from kubetune_operator.sweeps.algorithms.objective import MissingMetric
from kubetune_operator.sweeps.plan import Trial
from kubetune_operator.sweeps.schedulers.base import Scheduler, SchedulerError, never_reported

# Median stopping reads every trial's results for a check: at most this often per trial.
MEDIAN_CHECK_S = 5.0


class AshaScheduler(Scheduler):
    """Ray's ASHA: one decision per rung, at the trial's first result reaching it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        cfg = self.options
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
        self._feed(trial, self.recorded(decision))

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
                raise SchedulerError(never_reported(exc)) from None
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
        cfg = self.options
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
            raise SchedulerError(never_reported(exc)) from None
        return None
