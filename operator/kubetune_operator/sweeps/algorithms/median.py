"""Median stopping for a TrainableSweep, as Ray's MedianStoppingRule.

A trial is stopped once its best result so far is worse than the median of the
other trials' running means, where a running mean is the mean of a trial's
results with `grace_period <= time <= now`, over the trials that have reached
`now`. Nothing is decided before `grace_period`, nor while fewer than
`min_samples_required` other trials have reached `now`. Pure and replayable.

Differences from Ray, on purpose:
- Ray pauses a trial that lacks comparisons when other trials wait to run and
  `min_time_slice` has passed since its last pause; the scheduler cannot see
  the queue, so the caller says so with `others_waiting=True`.
- With `hard_stop=False` a stopped trial gets "PAUSE" (as Ray) and afterwards
  only "CONTINUE".
- A trial with no result inside [grace_period, now] is left out of the median
  (Ray takes the mean of nothing, NaN, and then always stops).
- A result without the metric or time attribute raises MissingMetric instead
  of being ignored.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any, Literal

from kubetune_operator.sweeps.algorithms.objective import (
    MissingMetric,
    Objective,
    metric_value,
    require,
)

__all__ = ["Median", "MissingMetric"]

MedianDecision = Literal["CONTINUE", "STOP", "PAUSE"]


class Median(Objective):
    """Median stopping rule over the results of a sweep's trials."""

    def __init__(
        self,
        *,
        metric: str,
        mode: str,
        time_attr: str = "training_iteration",
        grace_period: float = 1,
        min_samples_required: int = 3,
        min_time_slice: float = 0,
        hard_stop: bool = True,
    ) -> None:
        super().__init__(metric, mode, time_attr)
        # `not x < 0` rather than `x >= 0`: a NaN passes, as it always has.
        require(not grace_period < 0, "grace_period", ">= 0", grace_period)
        require(
            isinstance(min_samples_required, int) and min_samples_required >= 1,
            "min_samples_required",
            "an integer >= 1",
            min_samples_required,
        )
        require(not min_time_slice < 0, "min_time_slice", ">= 0", min_time_slice)
        self.grace_period = grace_period
        self.min_samples_required = min_samples_required
        self.min_time_slice = min_time_slice
        self.hard_stop = hard_stop
        # Per trial, its (time, value) results in arrival order.
        self._results: dict[str, list[tuple[float, float]]] = {}
        self._stopped: set[str] = set()
        self._last_pause: dict[str, float] = {}

    def _best(self, trial_id: str) -> float:
        values = [v for _, v in self._results[trial_id]]
        return max(values) if self.mode == "max" else min(values)

    def _running_mean(self, trial_id: str, now: float) -> float | None:
        scoped = [v for t, v in self._results[trial_id] if self.grace_period <= t <= now]
        return statistics.fmean(scoped) if scoped else None

    def _record(self, trial_id: str, result: Mapping[str, Any]) -> float:
        time = metric_value(result, self.time_attr)
        value = float(metric_value(result, self.metric))
        self._results.setdefault(trial_id, []).append((time, value))
        return time

    def on_result(
        self, trial_id: str, result: Mapping[str, Any], *, others_waiting: bool = False
    ) -> MedianDecision:
        """ "CONTINUE", "STOP" (or "PAUSE" when hard_stop is False, or to yield).

        Raises MissingMetric when the result lacks the metric or time attribute.
        """
        metric_value(result, self.time_attr)
        metric_value(result, self.metric)
        if trial_id in self._stopped:
            return "CONTINUE"
        now = self._record(trial_id, result)
        if now < self.grace_period:
            return "CONTINUE"
        others = [
            other
            for other, results in self._results.items()
            if other != trial_id and results[-1][0] >= now
        ]
        means = [m for m in (self._running_mean(o, now) for o in others) if m is not None]
        if len(means) < self.min_samples_required:
            last = self._last_pause.get(trial_id, float("-inf"))
            if others_waiting and now - last > self.min_time_slice:
                self._last_pause[trial_id] = now
                return "PAUSE"
            return "CONTINUE"
        median = statistics.median(means)
        best = self._best(trial_id)
        worse = median > best if self.mode == "max" else median < best
        if not worse:
            return "CONTINUE"
        self._stopped.add(trial_id)
        return "STOP" if self.hard_stop else "PAUSE"

    def on_complete(self, trial_id: str, result: Mapping[str, Any] | None = None) -> None:
        """A trial ended; its final result (if given) still counts for the others."""
        if result is not None:
            self._record(trial_id, result)
