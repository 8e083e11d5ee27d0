"""The search space of a TrainableSweep: validation and the config of each trial.

A sweep's trials are numbered 0..trial_count-1 and each trial's config is a pure
function of (paramSpace, index, numSamples, seed, searcher type), so a restarted
controller recomputes exactly the configs it created before, without any state.

The space is a plain dict (the CRD's `paramSpace`). Each value is either
- a distribution: a dict with exactly one key among `grid`, `choice`, `uniform`,
  `loguniform`, `randint`, `quniform` (argument lists as Ray's `tune.*`);
- a nested space: any other dict (keys become nested config keys; nesting may go
  to any depth, and a dict of constants is simply a constant dict);
- a constant: any non-dict value.

Order of trials, as Ray's BasicVariantGenerator: for each of `num_samples`
samples, every combination of the grid values; the grid parameters are sorted by
their key path and the first one varies fastest. Ray sorts the same way; it also
makes the order independent of how the dict was serialized (the Kubernetes API
returns object keys sorted anyway).

Random draws: trial `index` draws its sampled values from
`random.Random(f"{seed}:{index}")` (string seeds hash with SHA-512, stable across
processes and Python builds), in key-path order. Ray draws from one shared
stream instead, so the values differ from Ray's for the same seed; only the
distributions are the same.

Searcher `grid`: every `choice` is expanded like a `grid`, and continuous or
integer distributions (`uniform`, `loguniform`, `randint`, `quniform`) are
refused with a SpaceError, since a grid over them has no finite meaning.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint", "quniform")
SEARCHERS = ("random", "grid")
# Ray names we do not support: refused instead of being taken for nested constants.
_UNSUPPORTED = (
    "grid_search",
    "randn",
    "qrandn",
    "qloguniform",
    "qrandint",
    "lograndint",
    "qlograndint",
    "sample_from",
)

Path = tuple[str, ...]


class SpaceError(ValueError):
    """A paramSpace or searcher that cannot be used; the message says how to fix it."""


def _name(path: Path) -> str:
    return "paramSpace." + ".".join(path)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_distribution(value: object) -> bool:
    """True for a dict whose only key is one of DISTRIBUTIONS."""
    return isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS


def check_distribution(dist: Mapping[str, Any], where: str) -> None:
    """Raise SpaceError unless `dist` is a well-formed distribution; `where` names it."""
    keys = list(dist)
    kinds = [k for k in keys if k in DISTRIBUTIONS]
    if len(keys) != 1 or not kinds:
        raise SpaceError(
            f"{where}: a distribution has exactly one key among {', '.join(DISTRIBUTIONS)},"
            f" got keys {keys}"
        )
    kind = kinds[0]
    args = dist[kind]
    if kind in ("grid", "choice"):
        if not isinstance(args, list) or not args:
            raise SpaceError(f"{where}: {kind} needs a non-empty list of values, got {args!r}")
        return
    if kind == "quniform":
        ok = isinstance(args, list) and len(args) == 3 and all(_is_number(a) for a in args)
        if not ok or not (args[0] < args[1] and args[2] > 0):
            raise SpaceError(
                f"{where}: quniform needs [low, high, q] with low < high and q > 0, got {args!r}"
            )
        for bound in args[:2]:
            if not math.isclose(bound / args[2], round(bound / args[2]), abs_tol=1e-9):
                raise SpaceError(
                    f"{where}: quniform bound {bound} is not a multiple of q={args[2]};"
                    " choose bounds that are multiples of q (as Ray requires)"
                )
        return
    pair = isinstance(args, list) and len(args) == 2
    if kind == "randint":
        if not (pair and all(_is_int(a) for a in args) and args[0] < args[1]):
            raise SpaceError(
                f"{where}: randint needs [low, high) integers with low < high, got {args!r}"
            )
        return
    if not (pair and all(_is_number(a) for a in args) and args[0] < args[1]):
        raise SpaceError(f"{where}: {kind} needs [low, high] with low < high, got {args!r}")
    if kind == "loguniform" and args[0] <= 0:
        raise SpaceError(f"{where}: loguniform needs [low, high] with 0 < low < high, got {args!r}")


def _walk(space: Mapping[str, Any], prefix: Path) -> list[tuple[Path, Any]]:
    """Flatten the space into (key path, value) leaves, validating as it goes."""
    if not isinstance(space, Mapping):
        raise SpaceError(f"{_name(prefix) if prefix else 'paramSpace'}: must be a mapping")
    leaves: list[tuple[Path, Any]] = []
    for key, value in space.items():
        if not isinstance(key, str) or not key:
            raise SpaceError(f"{_name(prefix)}: keys must be non-empty strings, got {key!r}")
        path = (*prefix, key)
        if isinstance(value, Mapping):
            unsupported = [k for k in value if k in _UNSUPPORTED]
            if unsupported:
                raise SpaceError(
                    f"{_name(path)}: {unsupported[0]} is not supported; use one of"
                    f" {', '.join(DISTRIBUTIONS)}"
                )
            if any(k in DISTRIBUTIONS for k in value):
                check_distribution(value, _name(path))
                leaves.append((path, value))
            else:
                leaves.extend(_walk(value, path))
        else:
            leaves.append((path, value))
    return leaves


def _grid_kinds(searcher_type: str) -> tuple[str, ...]:
    return ("grid", "choice") if searcher_type == "grid" else ("grid",)


def _split(space: Mapping[str, Any], searcher_type: str) -> tuple[list, list, list]:
    """(constants, sampled, grid) leaves; grid and sampled sorted by key path."""
    if searcher_type not in SEARCHERS:
        raise SpaceError(f"searcher.type: must be one of {', '.join(SEARCHERS)}")
    gridded = _grid_kinds(searcher_type)
    constants, sampled, grid = [], [], []
    for path, value in _walk(space, ()):
        if not is_distribution(value):
            constants.append((path, value))
            continue
        kind = next(iter(value))
        if kind in gridded:
            grid.append((path, value[kind]))
        elif searcher_type == "grid":
            raise SpaceError(
                f"{_name(path)}: searcher grid can only expand grid and choice, got {kind};"
                " use searcher type random, or list the values with choice"
            )
        else:
            sampled.append((path, value))
    sampled.sort(key=lambda leaf: leaf[0])
    grid.sort(key=lambda leaf: leaf[0])
    return constants, sampled, grid


def validate_space(space: Mapping[str, Any], searcher_type: str = "random") -> None:
    """Raise SpaceError naming the first bad parameter; None when the space is usable."""
    _split(space, searcher_type)


def validate_searcher(searcher: Mapping[str, Any]) -> None:
    """Check `{type: random|grid, seed: int}` (both optional); raise SpaceError otherwise."""
    if not isinstance(searcher, Mapping):
        raise SpaceError("searcher: must be a mapping like {type: random, seed: 7}")
    unknown = sorted(set(searcher) - {"type", "seed"})
    if unknown:
        raise SpaceError(f"searcher: unknown keys {unknown}; allowed are type and seed")
    kind = searcher.get("type", "random")
    if kind not in SEARCHERS:
        raise SpaceError(f"searcher.type: must be one of {', '.join(SEARCHERS)}, got {kind!r}")
    seed = searcher.get("seed", 0)
    if not _is_int(seed):
        raise SpaceError(f"searcher.seed: must be an integer, got {seed!r}")


def _check_samples(num_samples: int) -> None:
    if not _is_int(num_samples) or num_samples < 1:
        raise SpaceError(f"numSamples: must be an integer >= 1, got {num_samples!r}")


def trial_count(space: Mapping[str, Any], num_samples: int, searcher_type: str = "random") -> int:
    """num_samples x the product of the grid sizes, as Ray counts trials."""
    _check_samples(num_samples)
    _, _, grid = _split(space, searcher_type)
    return num_samples * math.prod(len(values) for _, values in grid)


def _assign(config: dict[str, Any], path: Path, value: Any) -> None:
    node = config
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def trial_config(
    space: Mapping[str, Any],
    index: int,
    num_samples: int,
    seed: int = 0,
    searcher_type: str = "random",
) -> dict[str, Any]:
    """The config of trial `index` (0-based); pure in its arguments.

    Keys keep the order of `space`; nested spaces give nested dicts. Raises
    SpaceError for a bad space and IndexError for an index outside
    range(trial_count(space, num_samples, searcher_type)).
    """
    _check_samples(num_samples)
    constants, sampled, grid = _split(space, searcher_type)
    sizes = [len(values) for _, values in grid]
    count = num_samples * math.prod(sizes)
    if not _is_int(index) or not 0 <= index < count:
        raise IndexError(f"trial index {index!r} outside 0..{count - 1}")
    chosen: dict[Path, Any] = {}
    rest = index
    for (path, values), size in zip(grid, sizes, strict=True):
        rest, position = divmod(rest, size)
        chosen[path] = values[position]
    rng = random.Random(f"{seed}:{index}")
    for path, dist in sampled:
        chosen[path] = sample(dist, rng)
    for path, value in constants:
        chosen[path] = value
    config: dict[str, Any] = {}
    # Assign in the order of the space so the config reads like the spec.
    for path, _ in _walk(space, ()):
        _assign(config, path, chosen[path])
    return config


def sample(dist: Mapping[str, Any], rng: random.Random) -> Any:
    """One value drawn from a distribution dict (validated first).

    `grid` samples like `choice` here (PBT resamples a gridded key uniformly).
    """
    check_distribution(dist, "distribution")
    kind, args = next(iter(dist.items()))
    if kind in ("grid", "choice"):
        return rng.choice(args)
    if kind == "uniform":
        return rng.uniform(args[0], args[1])
    if kind == "loguniform":
        return math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))
    if kind == "randint":
        return rng.randrange(args[0], args[1])
    low, high, q = args
    # As Ray: sample uniformly, then round to the nearest multiple of q (half to even).
    return float(round(rng.uniform(low, high) / q) * q)
