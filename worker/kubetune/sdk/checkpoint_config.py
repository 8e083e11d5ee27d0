"""When to checkpoint and what to keep: Ray's CheckpointConfig (with Ray's field
names and checks), read also from a TrainableJob's `spec.checkpoint`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from kubetune.sdk.errors import InvalidSettings, describe

# spec.checkpoint (camelCase), the SDK's short names, and Ray's names.
_ALIASES = {
    "frequency": "checkpoint_frequency",
    "checkpointFrequency": "checkpoint_frequency",
    "atEnd": "checkpoint_at_end",
    "at_end": "checkpoint_at_end",
    "checkpointAtEnd": "checkpoint_at_end",
    "numToKeep": "num_to_keep",
    "scoreAttribute": "checkpoint_score_attribute",
    "score_attribute": "checkpoint_score_attribute",
    "scoreOrder": "checkpoint_score_order",
    "score_order": "checkpoint_score_order",
}


@dataclass
class CheckpointConfig:
    """Ray's `tune.CheckpointConfig`. `checkpoint_at_end=None` means True for a class
    trainable (as under Ray's Tuner) and False for a function."""

    num_to_keep: int | None = None
    checkpoint_score_attribute: str | None = None
    checkpoint_score_order: str | None = "max"
    checkpoint_frequency: int | None = 0
    checkpoint_at_end: bool | None = None

    def __post_init__(self) -> None:
        n = self.num_to_keep
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
            raise InvalidSettings(
                f"num_to_keep must be a positive integer or None, got {n!r}: "
                "keep at least one checkpoint, or leave it unset to keep all"
            )
        if self.checkpoint_score_order not in ("max", "min"):
            raise InvalidSettings(
                f"checkpoint_score_order must be 'max' or 'min', got "
                f"{self.checkpoint_score_order!r}"
            )
        f = self.checkpoint_frequency or 0
        if isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise InvalidSettings(
                f"checkpoint_frequency must be an integer >= 0 (0 = off), got {f!r}"
            )
        self.checkpoint_frequency = f
        attr = self.checkpoint_score_attribute
        if attr is not None and not isinstance(attr, str):
            raise InvalidSettings(f"checkpoint_score_attribute must be a metric name, got {attr!r}")

    @property
    def score_order(self) -> str:
        return self.checkpoint_score_order or "max"

    def at_end_for(self, is_function: bool) -> bool:
        if self.checkpoint_at_end is None:
            return not is_function
        return bool(self.checkpoint_at_end)

    @classmethod
    def from_any(cls, value: Any) -> CheckpointConfig:
        """A CheckpointConfig, a dict in any of the accepted spellings, or None."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise InvalidSettings(
                f"checkpoint must be a dict or a CheckpointConfig, not {describe(value)}"
            )
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, raw in value.items():
            name = _ALIASES.get(key, key)
            if name not in known:
                raise InvalidSettings(
                    f"unknown checkpoint setting {key!r}: use frequency, atEnd, numToKeep, "
                    "scoreAttribute or scoreOrder"
                )
            kwargs[name] = raw
        return cls(**kwargs)


def wants_checkpoint(result: dict[str, Any], frequency: int, at_end: bool) -> bool:
    """Ray's rule for a class trainable: should_checkpoint, or the reported
    training_iteration a multiple of the frequency, or the final (done) result."""
    if result.get("should_checkpoint"):
        return True
    if frequency:
        it = result.get("training_iteration")
        if isinstance(it, int) and it % frequency == 0:
            return True
    return bool(at_end and result.get("done"))
