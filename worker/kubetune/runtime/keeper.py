"""The run's checkpoint keeper: commits a folder the trainable wrote as the
run's next checkpoint (results flushed first, manifest last), keeps the run
state's list of checkpoints true, prunes to numToKeep by score, and checks
once that the score attribute exists. Drivers save through it; nothing else
commits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune.runtime.display import Reporter
from kubetune.runtime.sink import ProgressSink
from kubetune.runtime.state import RunState
from kubetune.sdk.checkpoint_config import CheckpointConfig
from kubetune.sdk.metric_names import missing_metric
from kubetune.sdk.result_keys import lookup
from kubetune.storage.checkpoints import CheckpointInfo
from kubetune.storage.runfolder import RunStore


@dataclass(eq=False)
class CheckpointKeeper:
    store: RunStore
    state: RunState
    sink: ProgressSink
    config: CheckpointConfig
    reporter: Reporter
    # The score attribute was in a checkpoint's result.
    _score_seen: bool = field(default=False, init=False)

    def commit(self, folder: str, iteration: int, result: dict[str, Any]) -> CheckpointInfo:
        """`folder` as the checkpoint of `iteration`, whose result is `result`."""
        self.sink.flush()  # the results hold the checkpoint's iteration before it exists
        info = self.store.commit_checkpoint(Path(folder), iteration, result)
        state = self.state
        kept = [c for c in state.checkpoints if c.iteration != iteration] + [info]
        kept.sort(key=lambda c: c.iteration)
        state.checkpoints = kept
        cfg = self.config
        attr = cfg.checkpoint_score_attribute
        if attr and result and not self._score_seen:
            if not lookup(info.metrics, attr)[0]:
                # Checked after the commit, so the checkpoint is kept for a restore
                # once the name is fixed; before any pruning ranks by it.
                raise missing_metric(
                    "checkpoint score attribute", attr, result, "the first checkpoint's result"
                )
            self._score_seen = True
        if cfg.num_to_keep:
            deleted = {
                c.iteration for c in self.store.prune(cfg.num_to_keep, attr, cfg.score_order)
            }
            state.checkpoints = [c for c in state.checkpoints if c.iteration not in deleted]
        self.reporter.event(f"checkpoint {info.path} (iteration {iteration})")
        self.sink.checkpoint_committed()
        return info
