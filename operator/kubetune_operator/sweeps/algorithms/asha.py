"""ASHA early stopping for a TrainableSweep, as Ray's AsyncHyperBandScheduler.

Pure and replayable: the decisions depend only on the sequence of
(trial_id, result) fed in, so a restarted controller that replays the results it
recorded reaches the same state.

Rungs (per bracket s): milestones `grace_period * reduction_factor ** (k + s)`
for k in range(MAX_RUNGS - s), where MAX_RUNGS counts the milestones
`grace_period * reduction_factor ** k` that are <= max_t; they are checked from
the highest down. A result at `t` is recorded at the highest milestone <= t that
this trial has not recorded yet (so a trial reporting t=5 first records at 4,
and its next result records at 1, exactly as Ray). The trial stops if its value
is below the `1 - 1/reduction_factor` quantile of the values recorded at that
rung before it (numpy's linear interpolation, NaNs ignored). A result with
`t >= max_t` stops the trial. In mode `min` values are negated first.

Differences from Ray, on purpose:
- MAX_RUNGS is counted exactly instead of `int(log(max_t/grace)/log(rf) + 1)`,
  whose float rounding can drop the top rung (e.g. log(1000)/log(10) < 3).
- With several brackets Ray draws a trial's bracket with numpy's global random
  state (softmax of the bracket sizes); here the same softmax is drawn from
  `random.Random(f"{seed}:{trial_id}")`, so it is fixed per trial and replayable
  in any order of arrival.
- A result without the metric or time attribute raises MissingMetric instead
  of being silently ignored.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any, Literal

from kubetune_operator.sweeps.algorithms.objective import (
    MissingMetric,
    Objective,
    metric_value,
    require,
)

__all__ = ["CONTINUE", "STOP", "Asha", "MissingMetric", "count_milestones", "percentile"]

CONTINUE: Literal["CONTINUE"] = "CONTINUE"
STOP: Literal["STOP"] = "STOP"
Decision = Literal["CONTINUE", "STOP"]


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) with linear interpolation as numpy's nanpercentile.

    NaNs are ignored; None when no value is left.
    """
    data = sorted(v for v in values if not math.isnan(v))
    if not data:
        return None
    position = q * (len(data) - 1)
    lo = math.floor(position)
    hi = min(lo + 1, len(data) - 1)
    frac = position - lo
    a, b = data[lo], data[hi]
    # numpy's _lerp: interpolate from the nearer end, for the same rounding.
    return b - (b - a) * (1 - frac) if frac >= 0.5 else a + (b - a) * frac


def count_milestones(grace_period: float, reduction_factor: float, max_t: float) -> int:
    """How many milestones grace * rf**k (k >= 0) are <= max_t, counted exactly."""
    count = 0
    while grace_period * reduction_factor**count <= max_t * (1 + 1e-12):
        count += 1
    return count


class _Bracket:
    def __init__(self, grace_period: float, max_t: float, reduction_factor: float, s: int):
        self.rf = reduction_factor
        rungs = count_milestones(grace_period, reduction_factor, max_t) - s
        self.milestones = [grace_period * reduction_factor ** (k + s) for k in range(rungs)]
        self.milestones.reverse()
        self.recorded: list[dict[str, float]] = [{} for _ in self.milestones]

    def cutoff(self, recorded: dict[str, float]) -> float | None:
        # (1 - 1/rf) * 100 then / 100, the same float numpy's percentile sees.
        return percentile(list(recorded.values()), (1 - 1 / self.rf) * 100 / 100)

    def on_result(
        self, trial_id: str, cur_iter: float, value: float
    ) -> tuple[Decision, float | None]:
        for milestone, recorded in zip(self.milestones, self.recorded, strict=True):
            if cur_iter >= milestone and trial_id not in recorded:
                cut = self.cutoff(recorded)
                recorded[trial_id] = value
                if cut is not None and value < cut:
                    return STOP, milestone
                return CONTINUE, milestone
        return CONTINUE, None


class Asha(Objective):
    """Asynchronous successive halving over the results of a sweep's trials."""

    def __init__(
        self,
        *,
        metric: str,
        mode: str,
        time_attr: str = "training_iteration",
        grace_period: float = 1,
        reduction_factor: float = 4,
        max_t: float = 100,
        brackets: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(metric, mode, time_attr)
        require(grace_period > 0, "grace_period", "> 0", grace_period)
        require(reduction_factor > 1, "reduction_factor", "> 1", reduction_factor)
        require(max_t >= grace_period, "max_t", f">= grace_period ({grace_period})", max_t)
        most = count_milestones(grace_period, reduction_factor, max_t)
        require(
            isinstance(brackets, int) and 1 <= brackets <= most,
            "brackets",
            f"an integer in 1..{most} for these grace_period, reduction_factor and max_t",
            brackets,
        )
        self.max_t = max_t
        self.seed = seed
        self._brackets = [
            _Bracket(grace_period, max_t, reduction_factor, s) for s in range(brackets)
        ]
        self._trial_bracket: dict[str, int] = {}

    @property
    def milestones(self) -> list[list[float]]:
        """Each bracket's milestones, highest first (as Ray iterates them)."""
        return [list(b.milestones) for b in self._brackets]

    def bracket_of(self, trial_id: str) -> int:
        """The bracket index of a trial: Ray's softmax over bracket sizes, seeded per trial."""
        if trial_id not in self._trial_bracket:
            sizes = [len(b.milestones) for b in self._brackets]
            top = max(sizes)
            weights = [math.exp(size - top) for size in sizes]
            rng = random.Random(f"{self.seed}:{trial_id}")
            self._trial_bracket[trial_id] = rng.choices(range(len(sizes)), weights)[0]
        return self._trial_bracket[trial_id]

    def on_result(self, trial_id: str, result: Mapping[str, Any]) -> tuple[Decision, float | None]:
        """("CONTINUE" | "STOP", the milestone this result was recorded at, or None).

        Raises MissingMetric when the result lacks the metric or time attribute.
        """
        cur_iter = metric_value(result, self.time_attr)
        value = metric_value(result, self.metric)
        if cur_iter >= self.max_t:
            return STOP, None
        bracket = self._brackets[self.bracket_of(trial_id)]
        return bracket.on_result(trial_id, cur_iter, self._sign * float(value))
