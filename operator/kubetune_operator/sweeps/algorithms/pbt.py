"""Population based training for a TrainableSweep, as Ray's PopulationBasedTraining.

The scheduler decides; the controller acts. When a trial of the bottom quantile
reaches a perturbation point, `on_result` returns an `Exploit`: the trial should
be restarted from the donor's latest checkpoint (taken at or before
`donor_time`) with `config`. Everything is pure and deterministic in the seed and
the order of calls, so replaying the recorded calls rebuilds the same state.

Configs: the scheduler keeps each trial's current config. The controller calls
`register(trial_id, config)` when a trial starts; when `on_result` returns an
Exploit, the trial's config is updated to the Exploit's config at once (call
`register` again to override it if the controller applies something else).
`on_complete(trial_id)` drops a finished trial from the quantiles, as Ray does.

Mutations: a list, or `{choice: [...]}` / `{grid: [...]}`, is categorical; any
other distribution of paramSpace (uniform, loguniform, randint, quniform) is
continuous. Explore, as Ray's `_explore`, per mutation key in order:
- categorical: with probability resample_probability, or if the donor's value
  is not in the list, a uniform choice; else the neighbour one index left or
  right (chosen by the rng), clamped to the ends of the list;
- continuous: with probability resample_probability a fresh sample; else the
  donor's value times a factor chosen from perturbation_factors (not clamped to
  the distribution's bounds, as in Ray); an int donor value stays int.
Keys without a mutation are copied from the donor.

Differences from Ray, on purpose:
- One `random.Random(seed)` owned by the scheduler replaces Ray's global
  `random` module, so runs are reproducible and replayable.
- A donor config missing a continuous key resamples it (Ray raises KeyError).
- Nested mutation dicts, custom_explore_fn, burn-in and synchronous mode are
  not supported.
- A result without the metric or time attribute raises MissingMetric.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubetune_operator.sweeps.algorithms.objective import (
    MissingMetric,
    Objective,
    metric_value,
    require,
)
from kubetune_operator.sweeps.algorithms.space import SpaceError, check_distribution, sample

__all__ = ["Exploit", "MissingMetric", "Pbt", "explore", "quantiles"]


@dataclass(frozen=True)
class Exploit:
    """Restart `trial_id` from `donor`'s checkpoint at or before `donor_time`, with `config`."""

    trial_id: str
    donor: str
    donor_time: float
    config: dict[str, Any]
    operations: dict[str, str] = field(default_factory=dict)


@dataclass
class _TrialState:
    config: dict[str, Any]
    last_score: float | None = None
    last_train_time: float = 0
    last_perturbation_time: float = 0
    finished: bool = False


def _categories(mutation: Any) -> list[Any] | None:
    """The value list of a categorical mutation, None for a continuous one."""
    if isinstance(mutation, list | tuple):
        return list(mutation)
    kind = next(iter(mutation))
    return list(mutation[kind]) if kind in ("choice", "grid") else None


def check_mutations(mutations: Mapping[str, Any]) -> None:
    """Raise ValueError unless every mutation is a non-empty list or a distribution."""
    if not isinstance(mutations, Mapping) or not mutations:
        raise ValueError("hyperparam_mutations must name at least one key to mutate")
    for key, mutation in mutations.items():
        where = f"hyperparamMutations.{key}"
        if isinstance(mutation, list | tuple):
            if not mutation:
                raise ValueError(f"{where}: a list of values must not be empty")
        elif isinstance(mutation, Mapping):
            check_distribution(mutation, where)
        else:
            raise ValueError(
                f"{where}: must be a list of values or a distribution like"
                f" {{loguniform: [1e-4, 1e-1]}}, got {mutation!r}"
            )


def explore(
    config: Mapping[str, Any],
    mutations: Mapping[str, Any],
    resample_probability: float,
    perturbation_factors: Sequence[float],
    rng: random.Random,
) -> tuple[dict[str, Any], dict[str, str]]:
    """(new config, what was done to each key) from a donor's config; see the module doc."""
    new = copy.deepcopy(dict(config))
    operations: dict[str, str] = {}
    for key, mutation in mutations.items():
        current = config.get(key)
        values = _categories(mutation)
        if values is not None:
            if rng.random() < resample_probability or current not in values:
                new[key] = rng.choice(values)
                operations[key] = "resample"
            else:
                shift = rng.choice((-1, 1))
                old = values.index(current)
                index = min(max(old + shift, 0), len(values) - 1)
                new[key] = values[index]
                side = "left" if shift == -1 else "right"
                operations[key] = f"shift {side}" + (" (noop)" if index == old else "")
            continue
        resample = rng.random() < resample_probability
        if resample or not isinstance(current, int | float) or isinstance(current, bool):
            new[key] = sample(mutation, rng)
            operations[key] = "resample"
        else:
            factor = rng.choice(list(perturbation_factors))
            new[key] = current * factor
            operations[key] = f"* {factor}"
        if isinstance(current, int) and not isinstance(current, bool):
            new[key] = int(new[key])
    return new, operations


def quantiles(ranked: Sequence[str], quantile_fraction: float) -> tuple[list[str], list[str]]:
    """(lower, upper) of trial ids sorted worst to best, as Ray's `_quantiles`."""
    if len(ranked) <= 1:
        return [], []
    n = math.ceil(len(ranked) * quantile_fraction)
    if n > len(ranked) / 2:
        n = math.floor(len(ranked) / 2)
    return list(ranked[:n]), list(ranked[len(ranked) - n :])


class Pbt(Objective):
    """Population based training over a sweep's trials; see the module doc."""

    def __init__(
        self,
        *,
        metric: str,
        mode: str,
        time_attr: str = "training_iteration",
        perturbation_interval: float = 4,
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        perturbation_factors: Sequence[float] = (1.2, 0.8),
        hyperparam_mutations: Mapping[str, Any],
        seed: int = 0,
    ) -> None:
        super().__init__(metric, mode, time_attr)
        require(perturbation_interval > 0, "perturbation_interval", "> 0", perturbation_interval)
        require(
            0 <= quantile_fraction <= 0.5, "quantile_fraction", "in [0, 0.5]", quantile_fraction
        )
        require(
            0 <= resample_probability <= 1,
            "resample_probability",
            "in [0, 1]",
            resample_probability,
        )
        if not perturbation_factors:
            raise ValueError("perturbation_factors must not be empty, e.g. [1.2, 0.8]")
        try:
            check_mutations(hyperparam_mutations)
        except SpaceError as err:
            raise ValueError(str(err)) from None
        self.perturbation_interval = perturbation_interval
        self.quantile_fraction = quantile_fraction
        self.resample_probability = resample_probability
        self.perturbation_factors = tuple(perturbation_factors)
        self.mutations = dict(hyperparam_mutations)
        self._rng = random.Random(seed)
        self._trials: dict[str, _TrialState] = {}

    def register(self, trial_id: str, config: Mapping[str, Any]) -> None:
        """A trial started (or its config changed): remember its config."""
        state = self._trials.get(trial_id)
        if state is None:
            self._trials[trial_id] = _TrialState(config=copy.deepcopy(dict(config)))
        else:
            state.config = copy.deepcopy(dict(config))

    def config_of(self, trial_id: str) -> dict[str, Any]:
        """The config the scheduler holds for a trial (a copy)."""
        return copy.deepcopy(self._trials[trial_id].config)

    def on_complete(self, trial_id: str) -> None:
        """A trial ended: it no longer ranks in the quantiles (nor donates)."""
        if trial_id in self._trials:
            self._trials[trial_id].finished = True

    def ranked(self) -> list[str]:
        """Scored, unfinished trials from worst to best (ties: registration order)."""
        scored = [
            (state.last_score, tid)
            for tid, state in self._trials.items()
            if state.last_score is not None and not state.finished
        ]
        return [tid for _, tid in sorted(scored, key=lambda pair: pair[0])]

    def on_result(self, trial_id: str, result: Mapping[str, Any]) -> Exploit | None:
        """An Exploit when this trial should copy a better one now, else None.

        Raises KeyError for a trial never registered and MissingMetric when the
        result lacks the metric or time attribute.
        """
        time = metric_value(result, self.time_attr)
        value = metric_value(result, self.metric)
        if trial_id not in self._trials:
            raise KeyError(f"trial {trial_id!r} was never registered with Pbt.register")
        state = self._trials[trial_id]
        if time - state.last_perturbation_time < self.perturbation_interval:
            return None
        state.last_score = self._sign * float(value)
        state.last_train_time = time
        state.last_perturbation_time = time
        lower, upper = quantiles(self.ranked(), self.quantile_fraction)
        if trial_id not in lower:
            return None
        donor = self._rng.choice(upper)
        donor_state = self._trials[donor]
        config, operations = explore(
            donor_state.config,
            self.mutations,
            self.resample_probability,
            self.perturbation_factors,
            self._rng,
        )
        state.config = copy.deepcopy(config)
        # As Ray: the trial continues from the donor's checkpoint, so it takes
        # over the donor's clock.
        state.last_perturbation_time = donor_state.last_perturbation_time
        state.last_train_time = donor_state.last_train_time
        return Exploit(trial_id, donor, donor_state.last_train_time, config, operations)
