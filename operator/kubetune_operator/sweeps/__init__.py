"""Pure search algorithms of a TrainableSweep: the trial configs and the schedulers.

Standard library only, no I/O: the sweep controller feeds them results and acts
on their decisions, so they are tested without a cluster and replayable.
"""

from kubetune_operator.sweeps.asha import Asha, MissingMetric
from kubetune_operator.sweeps.median import Median
from kubetune_operator.sweeps.pbt import Exploit, Pbt
from kubetune_operator.sweeps.space import (
    SpaceError,
    sample,
    trial_config,
    trial_count,
    validate_searcher,
    validate_space,
)

__all__ = [
    "Asha",
    "Exploit",
    "Median",
    "MissingMetric",
    "Pbt",
    "SpaceError",
    "sample",
    "trial_config",
    "trial_count",
    "validate_searcher",
    "validate_space",
]
