"""Population based training for the sweep controller: members are trial
indexes; a member's newest generation (`<sweep>-t0003-g2`) is the one that
runs. An exploit stops the member's current generation (suspended: its data
stays) and makes the next one, with the explored config and `restoreFrom` the
donor's checkpoint taken at or before the perturbation point; no shared
volume, the checkpoints are in S3.

A decision `[seq, time, value, extra]` is recorded for each "ready" result
(one at least perturbationInterval after the member's last perturbation, the
only results that change Ray's PBT state); `extra` is the exploit acted on
({donor, checkpoint, config, donorTime}) or None. Replaying them in order
rebuilds the scheduler, its random generator included.
"""

from __future__ import annotations

from typing import Any

from kubetune_operator.sweeps.algorithms.objective import MissingMetric
from kubetune_operator.sweeps.algorithms.pbt import Pbt
from kubetune_operator.sweeps.plan import Trial
from kubetune_operator.sweeps.schedulers.base import Scheduler, SchedulerError, never_reported


def member_id(index: int) -> str:
    """The PBT member a trial index is, whatever its generation."""
    return f"t{index:04d}"


def member(trial: Trial) -> str:
    return member_id(trial.index)


class PbtScheduler(Scheduler):
    """Ray's PBT over the sweep's trials: a decision at each ready result; an
    exploit replaces the member's generation with the next one."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        cfg = self.options
        self.interval = float(cfg.get("perturbationInterval", 4))
        self.pbt = Pbt(
            metric=self.metric,
            mode=self.mode,
            time_attr=self.time_attr,
            perturbation_interval=self.interval,
            quantile_fraction=float(cfg.get("quantileFraction", 0.25)),
            resample_probability=float(cfg.get("resampleProbability", 0.25)),
            perturbation_factors=tuple(cfg.get("perturbationFactors") or (1.2, 0.8)),
            hyperparam_mutations=dict(cfg.get("hyperparamMutations") or {}),
            seed=int(cfg.get("seed", self.seed)),
        )
        if int(spec.get("maxConcurrent", 4)) < self.total:
            raise ValueError(
                f"the population ({self.total} trials) must all run at once: set "
                f"maxConcurrent >= {self.total}"
            )
        for index in range(self.total):
            self.pbt.register(member_id(index), self.config(index))
        # The trials' stop criterion: as in Ray, a result that meets it ends the
        # trial before the scheduler sees it, so it never makes an exploit (a
        # generation that would start where its donor already stopped).
        template = (spec.get("jobTemplate") or {}).get("spec") or {}
        self.stop = {
            key: float(bound)
            for key, bound in (template.get("stop") or {}).items()
            if isinstance(bound, int | float) and not isinstance(bound, bool)
        }
        self._last: dict[str, float] = {}  # member -> time of its last perturbation
        self._checkpoints: dict[str, list[dict[str, Any]]] = {}
        self.donors: dict[str, Trial] = {}  # member -> its newest generation

    def _ready(self, trial: Trial, time: float) -> bool:
        return time - self._last.get(member(trial), 0.0) >= self.interval

    def _feed(self, trial: Trial, result: dict[str, Any]) -> Any:
        m = member(trial)
        exploit = self.pbt.on_result(m, result)
        self._last[m] = float(result[self.time_attr])
        if exploit is not None:
            self._last[m] = float(exploit.donor_time)
        return exploit

    def replay(self, trial: Trial, decision: list[Any]) -> None:
        exploit = self._feed(trial, self.recorded(decision))
        acted = decision[3] if len(decision) > 3 else None
        if exploit is not None and not acted:
            self.pbt.register(member(trial), trial.config)  # not acted on: keep its config
            self._last[member(trial)] = float(decision[1])

    def due(self, trial: Trial) -> bool:
        return self._ready(trial, float(trial.iteration))

    def decide(
        self, trial: Trial, rows: list[dict[str, Any]], seq: int
    ) -> tuple[list[Any], str] | None:
        for row in rows:
            time = row.get(self.time_attr)
            if not isinstance(time, int | float) or not self._ready(trial, float(time)):
                continue
            if self._meets_stop(row):
                continue
            try:
                exploit = self._feed(trial, row)
            except MissingMetric as exc:
                raise SchedulerError(never_reported(exc)) from None
            value = row[self.metric]
            if exploit is None:
                return [seq, time, value, None], ""
            donor = self.donors.get(exploit.donor)
            checkpoint = _checkpoint_at(donor, exploit.donor_time) if donor else None
            if checkpoint is None:
                self.pbt.register(member(trial), trial.config)
                self._last[member(trial)] = float(time)
                return [seq, time, value, None], ""
            extra = {
                "donor": donor.name if donor else "",
                "checkpoint": checkpoint,
                "config": exploit.config,
                "donorTime": exploit.donor_time,
            }
            why = f"pbt: replaced by a copy of {extra['donor']} with an explored config"
            return [seq, time, value, extra], why
        return None

    def _meets_stop(self, row: dict[str, Any]) -> bool:
        return any(
            isinstance(row.get(key), int | float) and row[key] >= bound
            for key, bound in self.stop.items()
        )

    def pending_exploit(self, trial: Trial) -> dict[str, Any] | None:
        """The exploit recorded on a member's newest generation, whose next
        generation is still to be made."""
        if not trial.decisions:
            return None
        last = trial.decisions[-1]
        extra = last[3] if len(last) > 3 else None
        return dict(extra, seq=last[0]) if extra else None

    def set_members(self, current: dict[int, Trial]) -> None:
        self.donors = {member_id(i): t for i, t in current.items()}


def _checkpoint_at(donor: Trial, time: float) -> str | None:
    """The donor's newest kept checkpoint at or before `time`."""
    best = None
    for entry in donor.checkpoints:
        it = int(entry.get("iteration") or 0)
        if it <= time and (best is None or it > best[0]):
            best = (it, str(entry.get("path") or ""))
    return best[1] if best and best[1] else None
