"""Ray Tune's search space functions (`tune.uniform`, `tune.grid_search` ...),
as the plain dicts a TrainableSweep's paramSpace holds, so a Ray Tune
param_space moves over with the import line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def uniform(lower: float, upper: float) -> dict[str, Any]:
    return {"uniform": [lower, upper]}


def loguniform(lower: float, upper: float) -> dict[str, Any]:
    return {"loguniform": [lower, upper]}


def randint(lower: int, upper: int) -> dict[str, Any]:
    """An integer in [lower, upper), as Ray's."""
    return {"randint": [lower, upper]}


def quniform(lower: float, upper: float, q: float) -> dict[str, Any]:
    return {"quniform": [lower, upper, q]}


def choice(categories: Sequence[Any]) -> dict[str, Any]:
    return {"choice": list(categories)}


def grid_search(values: Sequence[Any]) -> dict[str, Any]:
    """Every value, in every sample (trials = num_samples x the grid sizes)."""
    return {"grid": list(values)}
