"""The sweep's trial configs: Ray's order, determinism without state, clear errors."""

from __future__ import annotations

import random

import pytest

from kubetune_operator.sweeps.algorithms.space import (
    SpaceError,
    sample,
    trial_config,
    trial_count,
    validate_searcher,
    validate_space,
)

SPACE = {
    "lr": {"loguniform": [1.0e-4, 1.0e-1]},
    "layers": {"choice": [2, 4, 8]},
    "seed": {"grid": [0, 1]},
    "width": {"randint": [16, 128]},
    "dropout": {"uniform": [0.0, 0.5]},
    "step": {"quniform": [0.0, 1.0, 0.25]},
    "name": "constant",
}


def test_trial_count_is_samples_times_grid_product() -> None:
    assert trial_count(SPACE, 16) == 32
    assert trial_count({"a": {"grid": [1, 2, 3]}, "b": {"grid": [1, 2]}}, 2) == 12
    assert trial_count({"a": 1}, 5) == 5
    # searcher grid expands choice too
    assert trial_count({"a": {"choice": [1, 2, 3]}, "b": {"grid": [1, 2]}}, 1, "grid") == 6


def test_grid_order_first_sorted_key_varies_fastest_then_samples_repeat() -> None:
    space = {"b": {"grid": [1, 2]}, "a": {"grid": ["x", "y", "z"]}}
    got = [trial_config(space, i, 2) for i in range(trial_count(space, 2))]
    pairs = [(c["a"], c["b"]) for c in got]
    assert pairs == [
        ("x", 1), ("y", 1), ("z", 1), ("x", 2), ("y", 2), ("z", 2),
        ("x", 1), ("y", 1), ("z", 1), ("x", 2), ("y", 2), ("z", 2),
    ]  # fmt: skip
    assert list(got[0]) == ["b", "a"]  # the config keeps the space's key order


def test_config_is_a_pure_function_of_space_index_seed() -> None:
    first = [trial_config(SPACE, i, 16, seed=7) for i in range(32)]
    again = [trial_config(dict(reversed(SPACE.items())), i, 16, seed=7) for i in range(32)]
    assert [sorted(c.items()) for c in first] == [sorted(c.items()) for c in again]
    assert trial_config(SPACE, 5, 16, seed=7) == first[5]
    assert trial_config(SPACE, 5, 16, seed=8) != first[5]
    assert len({c["lr"] for c in first}) == 32


def test_golden_configs_stay_the_same_across_releases() -> None:
    # A restarted controller recomputes configs: the scheme must never drift.
    assert trial_config(SPACE, 0, 16, seed=7) == {
        "lr": 0.053728012378637106,
        "layers": 2,
        "seed": 0,
        "width": 81,
        "dropout": 0.3507008095153937,
        "step": 0.5,
        "name": "constant",
    }
    assert trial_config(SPACE, 1, 16, seed=7)["seed"] == 1


def test_sampled_values_respect_their_distributions() -> None:
    for i in range(200):
        c = trial_config(SPACE, i % 32, 16, seed=i)
        assert 1e-4 <= c["lr"] <= 1e-1
        assert c["layers"] in (2, 4, 8)
        assert isinstance(c["width"], int) and 16 <= c["width"] < 128
        assert 0.0 <= c["dropout"] <= 0.5
        assert c["step"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert isinstance(c["step"], float)
        assert c["name"] == "constant"


def test_nested_spaces_give_nested_configs_and_sort_by_path() -> None:
    space = {
        "optimizer": {"name": "adam", "beta": {"grid": [0.9, 0.99]}, "lr": {"uniform": [0, 1]}},
        "a": {"grid": [1, 2]},
        "const": {"plain": {"dict": 1}},
    }
    assert trial_count(space, 1) == 4
    c0, c1, c2 = (trial_config(space, i, 1) for i in range(3))
    assert (c0["a"], c0["optimizer"]["beta"]) == (1, 0.9)
    assert (c1["a"], c1["optimizer"]["beta"]) == (2, 0.9)  # ("a",) < ("optimizer", "beta")
    assert (c2["a"], c2["optimizer"]["beta"]) == (1, 0.99)
    assert c0["optimizer"]["name"] == "adam"
    assert 0 <= c0["optimizer"]["lr"] <= 1
    assert c0["const"] == {"plain": {"dict": 1}}


def test_grid_searcher_expands_choice_and_refuses_continuous() -> None:
    space = {"layers": {"choice": [2, 4]}, "seed": {"grid": [0, 1]}}
    got = [trial_config(space, i, 1, searcher_type="grid") for i in range(4)]
    assert [(c["layers"], c["seed"]) for c in got] == [(2, 0), (4, 0), (2, 1), (4, 1)]
    with pytest.raises(SpaceError, match=r"paramSpace\.lr: searcher grid can only expand"):
        validate_space({"lr": {"uniform": [0, 1]}}, "grid")


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            {"lr": {"loguniform": [0, 1]}},
            "paramSpace.lr: loguniform needs [low, high] with 0 < low < high, got [0, 1]",
        ),
        ({"lr": {"uniform": [1, 0]}}, "paramSpace.lr: uniform needs [low, high] with low < high"),
        ({"lr": {"uniform": [0]}}, "paramSpace.lr: uniform needs [low, high]"),
        ({"w": {"randint": [1.5, 4]}}, "paramSpace.w: randint needs [low, high) integers"),
        ({"w": {"randint": [4, 4]}}, "paramSpace.w: randint needs [low, high) integers"),
        ({"s": {"quniform": [0, 1]}}, "paramSpace.s: quniform needs [low, high, q]"),
        ({"s": {"quniform": [0, 1, -1]}}, "paramSpace.s: quniform needs [low, high, q]"),
        ({"s": {"quniform": [0.1, 1, 0.25]}}, "paramSpace.s: quniform bound 0.1 is not a multiple"),
        ({"c": {"choice": []}}, "paramSpace.c: choice needs a non-empty list"),
        ({"c": {"grid": "abc"}}, "paramSpace.c: grid needs a non-empty list"),
        ({"c": {"choice": [1], "extra": 2}}, "paramSpace.c: a distribution has exactly one key"),
        ({"c": {"grid_search": [1, 2]}}, "paramSpace.c: grid_search is not supported"),
        ({"o": {"lr": {"randn": [0, 1]}}}, "paramSpace.o.lr: randn is not supported"),
        ({"x": {"uniform": [0, True]}}, "paramSpace.x: uniform needs"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_bad_spaces_name_the_parameter_and_the_fix(space: dict, message: str) -> None:
    with pytest.raises(SpaceError) as err:
        validate_space(space)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    ("searcher", "message"),
    [
        ({"type": "bayes"}, "searcher.type: must be one of random, grid"),
        ({"seed": "7"}, "searcher.seed: must be an integer"),
        ({"type": "random", "sed": 7}, "searcher: unknown keys ['sed']"),
    ],
    ids=["type", "seed", "unknown-key"],
)
def test_bad_searchers(searcher: dict, message: str) -> None:
    with pytest.raises(SpaceError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_searcher(searcher)


def test_good_searchers() -> None:
    validate_searcher({})
    validate_searcher({"type": "grid", "seed": 3})


def test_index_and_num_samples_are_checked() -> None:
    with pytest.raises(IndexError):
        trial_config(SPACE, 32, 16)
    with pytest.raises(IndexError):
        trial_config(SPACE, -1, 16)
    with pytest.raises(SpaceError, match="numSamples"):
        trial_count(SPACE, 0)


def test_sample_draws_from_one_distribution() -> None:
    rng = random.Random(1)
    assert sample({"choice": ["a"]}, rng) == "a"
    assert sample({"grid": [3]}, rng) == 3
    assert 2 <= sample({"randint": [2, 3]}, rng) < 3
    assert 1.0 <= sample({"loguniform": [1.0, 10.0]}, rng) <= 10.0
    with pytest.raises(SpaceError):
        sample({"loguniform": [-1, 1]}, rng)


def test_the_sweep_algorithms_use_the_standard_library_and_each_other_only() -> None:
    import ast
    import sys
    from pathlib import Path

    import kubetune_operator.sweeps.algorithms as sweeps

    allowed = set(sys.stdlib_module_names) | {"__future__", "kubetune_operator"}
    for path in Path(sweeps.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = {node.module}
            else:
                continue
            roots = {m.split(".")[0] for m in modules}
            assert roots <= allowed, (path.name, roots)
            ours = {m for m in modules if m.split(".")[0] == "kubetune_operator"}
            assert all(m.startswith(f"{sweeps.__name__}.") for m in ours), (path.name, ours)
    assert set(sweeps.__all__) >= {"Asha", "Median", "Pbt", "trial_config", "SpaceError"}
