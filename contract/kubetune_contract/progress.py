"""The progress document: what a worker reports of its run (by push, and in
the run folder's progress file) and the operator turns into a job's status.
One type, its fields, caps and states, so both sides read and write the same
shape; parsed as untrusted input, since anything in a pod can write it."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from kubetune_contract.run_folder import is_own_checkpoint

__all__ = [
    "COMPLETED",
    "FAILED",
    "MAX_CHECKPOINTS",
    "MAX_COUNT",
    "MAX_MESSAGE",
    "MAX_PATH",
    "MAX_REASON",
    "MAX_RESULT_KEYS",
    "MAX_STRING",
    "RUNNING",
    "STATES",
    "STOPPED",
    "Progress",
    "checkpoint_entry",
    "count",
    "unix_time",
]

# The run's state as the worker reports it.
RUNNING, COMPLETED, STOPPED, FAILED = "running", "completed", "stopped", "failed"
STATES = (RUNNING, COMPLETED, STOPPED, FAILED)

# Caps that keep a document, and the status built from it, small.
MAX_RESULT_KEYS = 30  # scalar keys of last_result
MAX_STRING = 256  # characters of a string value or key in last_result
MAX_CHECKPOINTS = 10  # entries of checkpoints (the newest)
MAX_REASON = 128
MAX_MESSAGE = 1024
MAX_PATH = 1024
# Status integers are int64 and JSON numbers doubles: counts above 2**53 are
# not ones a worker reached, and the API would refuse or round them.
MAX_COUNT = 2**53


@dataclass(frozen=True)
class Progress:
    """One progress document. Checkpoint entries are `{path, iteration, time}`."""

    run_id: str | None
    state: str
    iteration: int
    last_result: dict[str, Any] = field(default_factory=dict)
    latest_checkpoint: dict[str, Any] | None = None
    best_checkpoint: dict[str, Any] | None = None
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    message: str = ""
    updated: float | None = None  # the worker's clock, refreshed at least every 30 s
    restored_from: str | None = None
    failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The document as JSON holds it (at most MAX_CHECKPOINTS entries)."""
        doc = dataclasses.asdict(self)
        doc["checkpoints"] = doc["checkpoints"][-MAX_CHECKPOINTS:]
        return doc

    def encode(self) -> bytes:
        """The progress file's bytes, also the body of a progress push."""
        return json.dumps(self.to_dict(), default=str).encode()

    @classmethod
    def decode(cls, data: bytes | str) -> Progress:
        """Parse a document's bytes; ValueError/TypeError when it is not one."""
        return cls.from_dict(json.loads(data))

    @classmethod
    def from_dict(cls, data: Any) -> Progress:
        """Parse a document from storage or a push: both are untrusted, so each
        field must have its type (ValueError/TypeError otherwise) and checkpoint
        entries keep only their three fields, bounded."""
        if not isinstance(data, dict):
            raise TypeError("a progress document is a JSON object")
        last = data.get("last_result") or {}
        if not isinstance(last, dict):
            raise TypeError("last_result is not an object")
        kept = data.get("checkpoints") or []
        if not isinstance(kept, list):
            raise TypeError("checkpoints is not a list")
        run_id = data.get("run_id")
        updated = data.get("updated")
        restored = data.get("restored_from")
        return cls(
            run_id=None if run_id is None else str(run_id)[:MAX_REASON],
            state=str(data.get("state") or "")[:32],
            iteration=count(data.get("iteration"), "iteration"),
            last_result=last,
            latest_checkpoint=checkpoint_entry(data.get("latest_checkpoint")),
            best_checkpoint=checkpoint_entry(data.get("best_checkpoint")),
            checkpoints=[c for c in map(checkpoint_entry, kept[-MAX_CHECKPOINTS:]) if c],
            reason=str(data.get("reason") or "")[:MAX_REASON],
            message=str(data.get("message") or "")[:MAX_MESSAGE],
            updated=None if updated is None else unix_time(updated, "updated"),
            restored_from=None if restored is None else str(restored)[:MAX_PATH],
            failures=count(data.get("failures"), "failures"),
        )

    def within(self, run_uri: str) -> tuple[Progress, list[str]]:
        """This progress without checkpoint entries outside the job's own folder
        (`<run_uri>/checkpoint_<digits>`), and the paths it dropped: status never
        points a restore or a download at another run's (or anyone's) files."""
        dropped: list[str] = []

        def own(entry: dict[str, Any] | None) -> dict[str, Any] | None:
            if entry is None or is_own_checkpoint(run_uri, entry.get("path")):
                return entry
            dropped.append(str(entry.get("path")))
            return None

        kept = [c for c in self.checkpoints if own(c)]
        cleaned = dataclasses.replace(
            self,
            latest_checkpoint=own(self.latest_checkpoint),
            best_checkpoint=own(self.best_checkpoint),
            checkpoints=kept,
        )
        return cleaned, list(dict.fromkeys(dropped))


def checkpoint_entry(value: Any) -> dict[str, Any] | None:
    """A checkpoint as status shows it: {path, iteration, time}, nothing else."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError("a checkpoint entry is not an object")
    entry: dict[str, Any] = {
        "path": str(value.get("path") or "")[:MAX_PATH],
        "iteration": count(value.get("iteration"), "a checkpoint's iteration"),
    }
    when = value.get("time")
    if isinstance(when, str) and _RFC3339.fullmatch(when):
        entry["time"] = when
    return entry


def count(value: Any, what: str) -> int:
    """A non-negative integer from an untrusted document (None is 0); ValueError
    naming the field otherwise (a float, a string, NaN, a negative number)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ValueError(f"{what} must be an integer from 0 to 2**53, not {value!r:.40}")
    return value


def unix_time(value: Any, what: str) -> float:
    """Unix seconds from an untrusted document: a finite, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number of seconds, not {value!r:.40}")
    if not 0 <= value <= 1e11:  # also refuses NaN and the infinities
        raise ValueError(f"{what} is not a time: {value!r:.40}")
    return float(value)


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
