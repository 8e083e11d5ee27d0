"""Settings that name a metric (stop criteria, the checkpoint score attribute)
are checked against the first result that must carry it: a misspelt name
would otherwise never act, and a run told to stop at `training_iterations=3`
would train, and hold its GPU, forever without a word.

Pure: the loop calls these with a result and raises what they return.
"""

from __future__ import annotations

import difflib
from typing import Any

from kubetune.sdk.errors import MissingMetric
from kubetune.sdk.result_keys import CONFIG, flatten

# Enough names to spot the intended one; a message stays one readable line.
MAX_LISTED_KEYS = 40


def result_keys(result: dict[str, Any]) -> list[str]:
    """The result's metric names as settings may name them (flattened with '/'),
    sorted, without the config the result echoes."""
    return sorted(k for k in flatten({k: v for k, v in result.items() if k != CONFIG}))


def closest(key: str, keys: list[str]) -> str | None:
    """The name the user most likely meant: a nested key whose last part is key
    ("acc" for "val/acc"), else the nearest spelling, else None."""
    nested = [k for k in keys if k.rsplit("/", 1)[-1] == key]
    if nested:
        return nested[0]
    close = difflib.get_close_matches(key, keys, n=1)
    return close[0] if close else None


def missing_metric(setting: str, key: str, result: dict[str, Any], where: str) -> MissingMetric:
    """The error for a setting naming `key` that `result` lacks. `setting` says
    which setting it is ("stop criterion"), `where` which result ("the first
    result")."""
    keys = result_keys(result)
    hint = f"did you mean {close!r}? " if (close := closest(key, keys)) else ""
    listed = ", ".join(keys[:MAX_LISTED_KEYS]) + (", ..." if len(keys) > MAX_LISTED_KEYS else "")
    return MissingMetric(
        f"{setting} {key!r} is not in {where}, so it could never act: {hint}"
        f"fix the name, or report {key!r} from the trainable (the result has: {listed})"
    )
