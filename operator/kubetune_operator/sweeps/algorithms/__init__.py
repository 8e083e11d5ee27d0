"""The search algorithms of a TrainableSweep: the trial configs (space) and the
schedulers' rules (ASHA, median stopping, PBT), as Ray Tune has them.

Standard library only, no I/O, and nothing of the operator: they import only
each other. The sweep controller feeds them results and acts on their
decisions, so they are tested without a cluster and replayable.
"""

from kubetune_operator.sweeps.algorithms.asha import Asha
from kubetune_operator.sweeps.algorithms.median import Median
from kubetune_operator.sweeps.algorithms.objective import MissingMetric
from kubetune_operator.sweeps.algorithms.pbt import Exploit, Pbt
from kubetune_operator.sweeps.algorithms.space import (
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
