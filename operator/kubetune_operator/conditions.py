"""Kubernetes-style conditions: lastTransitionTime moves only when status flips,
and the sticky types (Complete, Failed, Finished) never go back once True.

Pure functions over the plain list kept in status.conditions.
"""

from __future__ import annotations

from typing import Any

from kubetune_operator.model import Cond


def get_condition(conditions: list[dict[str, Any]], ctype: str) -> dict[str, Any] | None:
    for c in conditions:
        if c.get("type") == ctype:
            return c
    return None


def set_condition(
    conditions: list[dict[str, Any]],
    ctype: str,
    status: str,
    reason: str,
    message: str,
    *,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """A new list with ctype set; the order of the others is kept."""
    old = get_condition(conditions, ctype)
    stuck = old is not None and ctype in Cond.STICKY and old.get("status") == "True"
    if stuck and status != "True":
        return conditions
    if old is not None and old.get("status") == status:
        transition = old.get("lastTransitionTime") or now
    else:
        transition = now
    new = {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }
    out = [c for c in conditions if c.get("type") != ctype]
    index = next((i for i, c in enumerate(conditions) if c.get("type") == ctype), len(out))
    out.insert(index, new)
    return out


def condition_is_true(conditions: list[dict[str, Any]], ctype: str) -> bool:
    c = get_condition(conditions, ctype)
    return c is not None and c.get("status") == "True"
