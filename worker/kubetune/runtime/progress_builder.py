"""The worker's side of the progress document (kubetune_contract.Progress):
which of a result's values it carries, chosen as a pure function of the
loop's state."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from kubetune.sdk.result_keys import AUTO_FILLED_KEYS
from kubetune_contract import Progress
from kubetune_contract.progress import MAX_RESULT_KEYS, MAX_STRING

# Shown first in last_result: what the status's printer columns and users look at.
_FIRST = (
    "training_iteration",
    "time_total_s",
    "time_this_iter_s",
    "timesteps_total",
    "episodes_total",
    "done",
)


def _scalar(value: Any) -> tuple[bool, Any]:
    if value is None or isinstance(value, bool | int | str):
        return True, value[:MAX_STRING] if isinstance(value, str) else value
    if isinstance(value, float):
        if math.isfinite(value):
            return True, value
        # JSON (and so Kubernetes status) has no NaN or infinity.
        return True, "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    item = getattr(value, "item", None)  # numpy and torch scalars
    if callable(item):
        try:
            return _scalar(item())
        except (TypeError, ValueError, RuntimeError):
            return False, None
    return False, None


def _flat_items(result: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in result.items():
        if key == "config" and not prefix:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(_flat_items(value, f"{name}/"))
        else:
            out.append((name, value))
    return out


def scalar_result(result: dict[str, Any] | None, limit: int = MAX_RESULT_KEYS) -> dict[str, Any]:
    """The result's scalar values (nested dicts flattened with "/", config left out,
    strings cut to 256 chars, NaN/inf as strings), at most `limit` keys: Ray's
    standard counters first, then the trainable's own metrics, then the rest."""
    if not result:
        return {}
    items = _flat_items(result)
    first = [kv for kv in items if kv[0] in _FIRST]
    first.sort(key=lambda kv: _FIRST.index(kv[0]))
    own = [kv for kv in items if kv[0] not in AUTO_FILLED_KEYS and kv[0].split("/")[0] != "perf"]
    rest = [kv for kv in items if kv[0] in AUTO_FILLED_KEYS and kv[0] not in _FIRST]
    rest += [kv for kv in items if kv[0].startswith("perf/")]
    out: dict[str, Any] = {}
    for key, value in first + own + rest:
        if len(out) >= limit:
            break
        ok, scalar = _scalar(value)
        if ok and key not in out:
            out[key] = scalar
    return out


def build_progress(
    *,
    run_id: str | None,
    state: str,
    reason: str,
    message: str,
    iteration: int,
    last_result: dict[str, Any] | None,
    latest: dict[str, Any] | None,
    best: dict[str, Any] | None,
    checkpoints: Sequence[dict[str, Any]],
    restored_from: str | None,
    failures: int = 0,
    now: float | None = None,
) -> Progress:
    """The progress document; checkpoint entries are `CheckpointInfo.to_status()`."""
    return Progress(
        run_id=run_id,
        state=state,
        reason=reason,
        message=message,
        iteration=int(iteration),
        last_result=scalar_result(last_result),
        updated=time.time() if now is None else now,
        latest_checkpoint=latest,
        best_checkpoint=best,
        checkpoints=list(checkpoints),
        restored_from=restored_from,
        failures=failures,
    )
