"""Stop criteria with Ray Tune's semantics: a dict stops when any
`result[key] >= value` (keys matched on the flattened result), `done` always
stops, a callable `fn(trial_id, result)` or a `Stopper` decides for itself.
A dict key missing from the first result ends the run with MissingMetric, as
Ray's trial runner did: such a criterion could never stop it."""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubetune.sdk.errors import InvalidSettings, describe
from kubetune.sdk.metric_names import missing_metric
from kubetune.sdk.result_keys import lookup

logger = logging.getLogger("kubetune")

_MISSING = object()


class Stopper(abc.ABC):
    """Ray's Stopper interface: called with every result; stop_all ends the run."""

    @abc.abstractmethod
    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool: ...

    def stop_all(self) -> bool:
        return False


class FunctionStopper(Stopper):
    """Wraps `fn(trial_id, result) -> bool`."""

    def __init__(self, function: Callable[[str, dict[str, Any]], bool]) -> None:
        self._fn = function

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return bool(self._fn(trial_id, result))

    @classmethod
    def is_valid_function(cls, fn: Any) -> bool:
        if hasattr(fn, "stop_all"):
            raise ValueError("a stop function must not have a stop_all attribute: use a Stopper")
        return callable(fn) and not isinstance(fn, Stopper)


def _number(key: str, value: Any) -> float | int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, Mapping):
        raise InvalidSettings(
            "Stopping criteria is now flattened by default: write "
            f"{{'{key}/<sub key>': value}} instead of a nested dict for {key!r}"
        )
    raise InvalidSettings(
        f"stop criterion {key!r} needs a number, got {describe(value)} {value!r}: "
        f"write e.g. {key}=100"
    )


class StopCriteria:
    """Decides, per result, whether the run stops; check() returns the reason (a
    short sentence) or None. Cheap on the hot path: one dict lookup per key."""

    def __init__(self, stop: Any, trial_id: str = "default") -> None:
        self.trial_id = trial_id
        self._dict: list[tuple[str, float | int]] = []
        self._stopper: Stopper | None = None
        self._warned: set[str] = set()
        self._first = True  # no result checked yet: every dict key must be in it
        if stop is None:
            pass
        elif isinstance(stop, Mapping):
            self._dict = [(str(k), _number(str(k), v)) for k, v in stop.items()]
        elif isinstance(stop, Stopper):
            self._stopper = stop
        elif isinstance(stop, list | tuple) and all(isinstance(s, Stopper) for s in stop):
            self._stopper = _Combined(list(stop))
        elif callable(stop) and FunctionStopper.is_valid_function(stop):
            self._stopper = FunctionStopper(stop)
        else:
            raise InvalidSettings(
                f"stop must be a dict {{metric: threshold}}, a function (trial_id, result) -> "
                f"bool or a Stopper, not {describe(stop)}"
            )

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self._dict]

    def check(self, result: dict[str, Any]) -> str | None:
        """The reason to stop, or None. Raises MissingMetric when this is the
        first result and a dict criterion is not in it."""
        first, self._first = self._first, False
        if result.get("done"):
            return "the trainable reported done"
        if self._stopper is not None:
            if self._stopper(self.trial_id, result):
                return "the stopper returned True"
            if self._stopper.stop_all():
                return "the stopper's stop_all() returned True"
        for key, threshold in self._dict:
            value = result.get(key, _MISSING)
            if value is _MISSING:
                found, value = lookup(result, key)
                if not found:
                    if first:
                        raise missing_metric("stop criterion", key, result, "the first result")
                    self._warn_missing(key, result)
                    continue
            try:
                if value >= threshold:
                    return f"stop criterion {key} >= {threshold} reached ({key}={value})"
            except TypeError:
                self._warn_once(
                    key,
                    f"stop criterion {key!r}: the result's value {value!r} is not a number; "
                    "it cannot stop the run",
                )
        return None

    def met_by(self, metrics: dict[str, Any]) -> str | None:
        """The dict criteria alone, against a checkpoint's stored metrics: lets a
        resumed run that already reached its goal end without training more."""
        for key, threshold in self._dict:
            found, value = lookup(metrics, key)
            if not found:
                continue
            try:
                if value >= threshold:
                    return f"stop criterion {key} >= {threshold} already reached ({key}={value})"
            except TypeError:
                continue
        return None

    def _warn_missing(self, key: str, result: dict[str, Any]) -> None:
        names = ", ".join(sorted(k for k in result if k != "config")[:20])
        self._warn_once(
            key,
            f"stop criterion {key!r} is not in this result (the first one had it), so "
            f"this result cannot meet it (results have: {names})",
        )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("%s", message)


class _Combined(Stopper):
    def __init__(self, stoppers: list[Stopper]) -> None:
        self._stoppers = stoppers

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return any(s(trial_id, result) for s in self._stoppers)

    def stop_all(self) -> bool:
        return any(s.stop_all() for s in self._stoppers)


def parse_stop_args(items: list[str]) -> dict[str, float | int]:
    """`KEY=VALUE` command-line stop criteria; the value must be a number."""
    out: dict[str, float | int] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key or not raw:
            raise InvalidSettings(f"--stop {item!r} must be KEY=VALUE, e.g. training_iteration=100")
        try:
            out[key] = int(raw)
        except ValueError:
            try:
                out[key] = float(raw)
            except ValueError:
                raise InvalidSettings(
                    f"--stop {item!r}: {raw!r} is not a number; write e.g. {key}=0.98"
                ) from None
    return out
