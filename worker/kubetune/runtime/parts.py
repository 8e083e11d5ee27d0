"""What a driver is given: the run's state record and the parts that act on
it (checkpoint keeper, progress sink, stop criteria, signals, reporter), and
the two ways a requested stop ends. A new driver or a coordination step takes
these and touches no other driver."""

from __future__ import annotations

from dataclasses import dataclass

from kubetune.runtime.display import Reporter
from kubetune.runtime.keeper import CheckpointKeeper
from kubetune.runtime.outcome import Outcome, RunOptions
from kubetune.runtime.signals import StopSignals
from kubetune.runtime.sink import ProgressSink
from kubetune.runtime.state import RunState
from kubetune.sdk.stopping import StopCriteria
from kubetune.storage.checkpoints import CheckpointInfo
from kubetune_contract import EXIT_STOP_UNSAVED, EXIT_STOPPED


@dataclass
class RunParts:
    opts: RunOptions
    state: RunState
    keeper: CheckpointKeeper
    sink: ProgressSink
    criteria: StopCriteria
    signals: StopSignals
    reporter: Reporter
    storage_uri: str  # the run folder

    def stopped(self, iteration: int, checkpoint: CheckpointInfo) -> Outcome:
        """Stopped on request at `iteration`, saved as `checkpoint`."""
        return Outcome(
            EXIT_STOPPED,
            f"stopped on {self.signals.signame} at iteration {iteration}; "
            f"checkpoint {checkpoint.path}",
        )

    def unsaved(self, why: str) -> Outcome:
        """Stopped on request without saving the iteration reached, and why."""
        latest = self.state.latest
        tail = (
            f"; the latest complete checkpoint is {latest.path} (iteration {latest.iteration})"
            if latest
            else "; there is no complete checkpoint"
        )
        return Outcome(
            EXIT_STOP_UNSAVED,
            f"stopped on {self.signals.signame or 'request'} at iteration "
            f"{self.state.iteration}: {why}{tail}",
        )
