"""The schedulers a sweep may name, the one its spec names, and the check of
a sweep's whole spec (before any trial is made), naming the field at fault."""

from __future__ import annotations

from typing import Any

from kubetune_operator.sweeps.algorithms import space as spaces
from kubetune_operator.sweeps.schedulers.base import Scheduler, settings_of
from kubetune_operator.sweeps.schedulers.population import PbtScheduler
from kubetune_operator.sweeps.schedulers.stopping import AshaScheduler, MedianScheduler

# FIFO is the interface itself: every trial runs to its own stop.
KINDS: dict[str, type[Scheduler]] = {
    "fifo": Scheduler,
    "median": MedianScheduler,
    "asha": AshaScheduler,
    "pbt": PbtScheduler,
}
SCHEDULERS = tuple(KINDS)


def make_scheduler(spec: dict[str, Any]) -> Scheduler:
    kind, _ = settings_of(spec)
    return KINDS.get(kind, Scheduler)(spec)


def validate(spec: dict[str, Any]) -> str:
    """Why the sweep's spec cannot run (one line naming the field), or ""."""
    searcher = dict(spec.get("searcher") or {})
    kind = str(searcher.get("type") or "random")
    try:
        spaces.validate_searcher({"type": kind, "seed": searcher.get("seed", 0)})
        spaces.validate_space(spec.get("paramSpace") or {}, kind)
        spaces.trial_count(spec.get("paramSpace") or {}, int(spec.get("numSamples", 1)), kind)
    except (spaces.SpaceError, ValueError) as exc:
        return str(exc)
    template = (spec.get("jobTemplate") or {}).get("spec") or {}
    if bool(template.get("trainable")) == bool(template.get("code")):
        return "jobTemplate.spec: set exactly one of trainable or code"
    if "config" in template:
        return "jobTemplate.spec.config: the sweep sets each trial's config from paramSpace"
    if not str((template.get("storage") or {}).get("uri") or "").startswith("s3://"):
        return "jobTemplate.spec.storage.uri: must be s3://BUCKET[/PREFIX]"
    sched, _ = settings_of(spec)
    if sched not in SCHEDULERS:
        return (
            f"scheduler.type {sched!r} is not supported here (use one of {', '.join(SCHEDULERS)})"
        )
    try:
        make_scheduler(spec)
    except (ValueError, TypeError) as exc:
        return f"scheduler.{sched}: {exc}"
    return ""
