"""Ray Tune's trial schedulers by their Ray names and arguments
(`kubetune.schedulers.ASHAScheduler(...)`), turned into a TrainableSweep's
`scheduler` spec; the operator runs the algorithms (docs/sweeps.md)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class FIFOScheduler:
    def to_spec(self) -> dict[str, Any]:
        return {"type": "fifo"}


@dataclass
class _TrialScheduler:
    """Ray's arguments every scheduler takes first. Its own arguments go into
    the spec under their camelCase names (`max_t` is `maxT`); metric and mode
    are the sweep's, not the scheduler's."""

    KIND: ClassVar[str]
    time_attr: str = "training_iteration"
    metric: str | None = None
    mode: str | None = None

    def to_spec(self) -> dict[str, Any]:
        settings = {
            _camel(f.name): self._spec_value(f.name, getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in ("metric", "mode")
        }
        return {"type": self.KIND, self.KIND: settings}

    def _spec_value(self, name: str, value: Any) -> Any:
        return value


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


@dataclass
class ASHAScheduler(_TrialScheduler):
    KIND: ClassVar[str] = "asha"
    max_t: float = 100
    grace_period: float = 1
    reduction_factor: float = 4
    brackets: int = 1


AsyncHyperBandScheduler = ASHAScheduler


@dataclass
class MedianStoppingRule(_TrialScheduler):
    KIND: ClassVar[str] = "median"
    grace_period: float = 1
    min_samples_required: int = 3
    min_time_slice: float = 0


@dataclass
class PopulationBasedTraining(_TrialScheduler):
    KIND: ClassVar[str] = "pbt"
    perturbation_interval: float = 4
    hyperparam_mutations: Mapping[str, Any] = field(default_factory=dict)
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25
    perturbation_factors: Sequence[float] = (1.2, 0.8)
    seed: int = 0

    def _spec_value(self, name: str, value: Any) -> Any:
        if name == "hyperparam_mutations":
            # A list of values is Ray's shorthand for a choice among them.
            return {
                k: {"choice": list(v)} if isinstance(v, list | tuple) else v
                for k, v in value.items()
            }
        if name == "perturbation_factors":
            return list(value)
        return value
