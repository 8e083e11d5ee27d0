"""The record of one run's state that the loop's parts are handed and update:
where it stands (iteration, last result), its complete checkpoints, what it
restored from, and how often it failed. Plain data: the parts hold the logic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubetune.storage.checkpoints import CheckpointInfo


@dataclass
class RunState:
    iteration: int = 0
    last_result: dict[str, Any] | None = None
    # The run's complete checkpoints, oldest first (what the run folder lists).
    checkpoints: list[CheckpointInfo] = field(default_factory=list)
    restored_from: str | None = None
    failures: int = 0
    # The exception behind a failed or unsaved end, for RunResult.error.
    error: BaseException | None = None

    @property
    def latest(self) -> CheckpointInfo | None:
        return self.checkpoints[-1] if self.checkpoints else None
