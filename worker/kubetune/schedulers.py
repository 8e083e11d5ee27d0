"""Ray Tune's trial schedulers by their Ray names and arguments
(`kubetune.schedulers.ASHAScheduler(...)`), turned into a TrainableSweep's
`scheduler` spec; the operator runs the algorithms (docs/sweeps.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FIFOScheduler:
    def to_spec(self) -> dict[str, Any]:
        return {"type": "fifo"}


@dataclass
class ASHAScheduler:
    time_attr: str = "training_iteration"
    metric: str | None = None
    mode: str | None = None
    max_t: float = 100
    grace_period: float = 1
    reduction_factor: float = 4
    brackets: int = 1

    def to_spec(self) -> dict[str, Any]:
        return {
            "type": "asha",
            "asha": {
                "timeAttr": self.time_attr,
                "maxT": self.max_t,
                "gracePeriod": self.grace_period,
                "reductionFactor": self.reduction_factor,
                "brackets": self.brackets,
            },
        }


AsyncHyperBandScheduler = ASHAScheduler


@dataclass
class MedianStoppingRule:
    time_attr: str = "training_iteration"
    metric: str | None = None
    mode: str | None = None
    grace_period: float = 1
    min_samples_required: int = 3
    min_time_slice: float = 0

    def to_spec(self) -> dict[str, Any]:
        return {
            "type": "median",
            "median": {
                "timeAttr": self.time_attr,
                "gracePeriod": self.grace_period,
                "minSamplesRequired": self.min_samples_required,
                "minTimeSlice": self.min_time_slice,
            },
        }


@dataclass
class PopulationBasedTraining:
    time_attr: str = "training_iteration"
    metric: str | None = None
    mode: str | None = None
    perturbation_interval: float = 4
    hyperparam_mutations: Mapping[str, Any] = field(default_factory=dict)
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25
    perturbation_factors: Sequence[float] = (1.2, 0.8)
    seed: int = 0

    def to_spec(self) -> dict[str, Any]:
        mutations = {
            k: {"choice": list(v)} if isinstance(v, list | tuple) else v
            for k, v in self.hyperparam_mutations.items()
        }
        return {
            "type": "pbt",
            "pbt": {
                "timeAttr": self.time_attr,
                "perturbationInterval": self.perturbation_interval,
                "hyperparamMutations": mutations,
                "quantileFraction": self.quantile_fraction,
                "resampleProbability": self.resample_probability,
                "perturbationFactors": list(self.perturbation_factors),
                "seed": self.seed,
            },
        }
