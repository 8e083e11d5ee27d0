"""What every sweep algorithm judges a trial by, in one place: the metric, its
mode and the time attribute, checked alike, and read from a result alike (a
missing key is an error that names the keys the result has, never a silent
skip); and the one way their other settings are refused. Standard library
only, as the algorithms that use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class MissingMetric(KeyError):
    """A result lacks the metric or time attribute the scheduler needs."""

    def __init__(self, key: str, result: Mapping[str, Any]) -> None:
        self.key = key
        self.available = sorted(str(k) for k in result)
        super().__init__(key)

    def __str__(self) -> str:
        return f"result has no {self.key!r}; it has {self.available}"


def metric_value(result: Mapping[str, Any], key: str) -> Any:
    """result[key], or MissingMetric naming the key and the keys present."""
    if key not in result:
        raise MissingMetric(key, result)
    return result[key]


def check_objective(metric: str, mode: str, time_attr: str) -> None:
    """ValueError unless the metric and time attribute are named and the mode
    is min or max."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if not metric or not time_attr:
        raise ValueError("metric and time_attr must be non-empty")


def require(ok: bool, name: str, rule: str, value: Any) -> None:
    """ValueError "NAME must be RULE, got VALUE" unless ok: every algorithm
    refuses a setting in the same words."""
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value}")


class Objective:
    """Base of the algorithms: the metric, its mode and the time attribute,
    checked (ValueError) before anything else, and the sign that turns a value
    into one to maximise."""

    def __init__(self, metric: str, mode: str, time_attr: str) -> None:
        check_objective(metric, mode, time_attr)
        self.metric = metric
        self.mode = mode
        self.time_attr = time_attr
        self._sign = 1.0 if mode == "max" else -1.0
