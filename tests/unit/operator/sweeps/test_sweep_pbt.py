"""PBT decisions: who exploits whom, how configs are explored, replay determinism."""

from __future__ import annotations

import random
from typing import Any

import pytest

from kubetune_operator.sweeps.algorithms.pbt import Exploit, MissingMetric, Pbt, explore, quantiles

MUTATIONS = {"lr": {"loguniform": [1e-4, 1e-1]}, "layers": {"choice": [2, 4, 8]}}


def pbt(**kwargs: Any) -> Pbt:
    options: dict[str, Any] = {
        "metric": "acc",
        "mode": "max",
        "perturbation_interval": 4,
        "hyperparam_mutations": MUTATIONS,
        "seed": 7,
        **kwargs,
    }
    return Pbt(**options)


def result(it: float, acc: float) -> dict[str, float]:
    return {"training_iteration": it, "acc": acc}


@pytest.mark.parametrize(
    ("n", "fraction", "lower", "upper"),
    [
        (0, 0.25, [], []),
        (1, 0.25, [], []),
        (2, 0.25, ["t0"], ["t1"]),  # ceil(0.5) = 1
        (3, 0.25, ["t0"], ["t2"]),  # ceil(0.75) = 1
        (4, 0.25, ["t0"], ["t3"]),  # ceil(1.0) = 1
        (5, 0.25, ["t0", "t1"], ["t3", "t4"]),  # ceil(1.25) = 2 <= 2.5
        (3, 0.5, ["t0"], ["t2"]),  # ceil(1.5) = 2 > 1.5: capped at floor(1.5) = 1
        (4, 0.0, [], []),
    ],
    ids=["none", "one", "two", "three", "four", "five", "half-of-three", "zero-fraction"],
)
def test_quantiles(n: int, fraction: float, lower: list[str], upper: list[str]) -> None:
    assert quantiles([f"t{i}" for i in range(n)], fraction) == (lower, upper)


def start(scheduler: Pbt, n: int) -> list[str]:
    ids = [f"t{i}" for i in range(n)]
    for i, tid in enumerate(ids):
        scheduler.register(tid, {"lr": 0.01, "layers": 4, "name": tid, "index": i})
    return ids


def test_lower_quantile_exploits_upper_after_the_interval() -> None:
    scheduler = pbt(resample_probability=0.0, perturbation_factors=(1.2,))
    ids = start(scheduler, 4)
    scheduler.register("t3", {"lr": 0.02, "layers": 8, "name": "t3"})
    # Nothing before time 4 (the first perturbation point).
    assert [scheduler.on_result(t, result(3, 0.5)) for t in ids] == [None] * 4
    # At time 4 each trial is scored as it reports; t0 ranks alone, then
    # [t0, t1] (t1 is upper), [t0, t1, t2], [t0, .., t3]: never the reporter in lower.
    assert [scheduler.on_result(t, result(4, 0.1 * (i + 1))) for i, t in enumerate(ids)] == [
        None
    ] * 4
    assert scheduler.on_result("t0", result(5, 0.0)) is None  # 5 - 4 < 4
    decision = scheduler.on_result("t0", result(8, 0.05))
    assert isinstance(decision, Exploit)
    assert (decision.trial_id, decision.donor, decision.donor_time) == ("t0", "t3", 4)
    # resample 0: lr 0.02 * 1.2; layers 8 shifts to 4 or stays at the end (noop)
    assert decision.config["lr"] == pytest.approx(0.024)
    assert decision.config["layers"] in (4, 8)
    assert decision.config["name"] == "t3"  # keys without mutation come from the donor
    assert decision.operations["lr"] == "* 1.2"
    assert decision.operations["layers"] in ("shift left", "shift right (noop)")
    assert scheduler.config_of("t0") == decision.config
    # t0 continues from t3's checkpoint: it takes over t3's clock (4), so it is
    # not judged again until time 8.
    assert scheduler.on_result("t0", result(5, 0.0)) is None
    assert scheduler.on_result("t0", result(8, 0.0)) is not None


def test_upper_and_middle_trials_are_left_alone() -> None:
    scheduler = pbt()
    ids = start(scheduler, 4)
    for i, t in enumerate(ids):
        scheduler.on_result(t, result(4, i))
    assert scheduler.on_result("t3", result(8, 10)) is None
    assert scheduler.on_result("t1", result(8, 1.5)) is None
    # t2 drops below t0 (scores: t2 -1, t0 0, t1 1.5, t3 10): it copies t3.
    decision = scheduler.on_result("t2", result(8, -1))
    assert decision is not None
    assert (decision.donor, decision.donor_time) == ("t3", 8)


def test_min_mode_exploits_the_highest_loss() -> None:
    scheduler = pbt(mode="min")
    ids = start(scheduler, 2)
    assert scheduler.on_result(ids[0], result(4, 0.1)) is None
    decision = scheduler.on_result(ids[1], result(4, 0.9))
    assert decision is not None and (decision.trial_id, decision.donor) == ("t1", "t0")


def test_finished_trials_leave_the_population() -> None:
    scheduler = pbt()
    start(scheduler, 2)
    scheduler.on_result("t0", result(4, 1.0))
    scheduler.on_complete("t0")
    assert scheduler.on_result("t1", result(4, 0.0)) is None
    assert scheduler.ranked() == ["t1"]


def test_explore_categorical_moves_to_a_neighbour_clamped_at_the_ends() -> None:
    seen = set()
    for seed in range(50):
        new, ops = explore({"k": 8}, {"k": [2, 4, 8]}, 0.0, (1.2, 0.8), random.Random(seed))
        seen.add((new["k"], ops["k"]))
    assert seen == {(4, "shift left"), (8, "shift right (noop)")}
    middle = {
        explore({"k": 4}, {"k": {"choice": [2, 4, 8]}}, 0.0, (1.2,), random.Random(s))[0]["k"]
        for s in range(50)
    }
    assert middle == {2, 8}


def test_explore_resamples_categorical_off_the_list_or_with_probability() -> None:
    new, ops = explore({"k": 3}, {"k": [2, 4, 8]}, 0.0, (1.2,), random.Random(0))
    assert new["k"] in (2, 4, 8) and ops["k"] == "resample"
    new, ops = explore({"k": 4}, {"k": [2, 4, 8]}, 1.0, (1.2,), random.Random(0))
    assert ops["k"] == "resample"


def test_explore_continuous_perturbs_by_a_factor_or_resamples() -> None:
    values = set()
    for seed in range(50):
        new, ops = explore({"lr": 0.01}, MUTATIONS, 0.0, (1.2, 0.8), random.Random(seed))
        values.add(round(new["lr"], 12))
        assert ops["lr"] in ("* 1.2", "* 0.8")
    assert values == {0.012, 0.008}
    new, ops = explore({"lr": 0.01}, MUTATIONS, 1.0, (1.2,), random.Random(0))
    assert ops["lr"] == "resample" and 1e-4 <= new["lr"] <= 1e-1


def test_explore_keeps_ints_int_and_copies_other_keys() -> None:
    mutations = {"width": {"randint": [16, 128]}}
    new, _ = explore({"width": 64, "x": [1]}, mutations, 0.0, (1.2,), random.Random(0))
    assert new == {"width": 76, "x": [1]}  # int(64 * 1.2)
    new, _ = explore({"width": 64}, mutations, 1.0, (1.2,), random.Random(0))
    assert isinstance(new["width"], int) and 16 <= new["width"] < 128
    new, ops = explore({}, mutations, 0.0, (1.2,), random.Random(0))
    assert ops["width"] == "resample"  # missing in the donor: resampled


def test_replay_gives_the_same_exploits() -> None:
    def run() -> list[Exploit | None]:
        scheduler = pbt(quantile_fraction=0.25)
        ids = start(scheduler, 8)
        rng = random.Random(1)
        out = []
        for it in range(1, 41):
            for t in ids:
                out.append(scheduler.on_result(t, result(it, rng.random())))
        return out

    first = run()
    assert first == run()
    exploits = [d for d in first if d is not None]
    assert len(exploits) > 5
    assert len({d.donor for d in exploits}) > 1  # the donor is drawn among the upper quantile


def test_donor_is_drawn_from_the_upper_quantile() -> None:
    scheduler = pbt()
    ids = start(scheduler, 8)
    for i, t in enumerate(ids[1:], start=1):
        scheduler.on_result(t, result(4, i))
    # 8 trials: n = ceil(8 * 0.25) = 2; upper = t6, t7
    decision = scheduler.on_result("t0", result(4, 0))
    assert decision is not None and decision.donor in ("t6", "t7")


def test_unregistered_trials_and_missing_metrics_raise() -> None:
    scheduler = pbt()
    with pytest.raises(KeyError, match="never registered"):
        scheduler.on_result("ghost", result(4, 1))
    start(scheduler, 1)
    with pytest.raises(MissingMetric, match="acc"):
        scheduler.on_result("t0", {"training_iteration": 4})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantile_fraction": 0.6}, r"quantile_fraction must be in \[0, 0.5\]"),
        ({"hyperparam_mutations": {}}, "at least one key"),
        ({"hyperparam_mutations": {"lr": 0.1}}, "hyperparamMutations.lr: must be a list"),
        ({"hyperparam_mutations": {"lr": []}}, "hyperparamMutations.lr: a list"),
        (
            {"hyperparam_mutations": {"lr": {"loguniform": [0, 1]}}},
            r"hyperparamMutations.lr: loguniform needs \[low, high\] with 0 < low",
        ),
        ({"perturbation_interval": 0}, "perturbation_interval must be > 0"),
        ({"resample_probability": 2}, "resample_probability"),
        ({"perturbation_factors": ()}, "perturbation_factors"),
        ({"mode": "up"}, "mode"),
    ],
    ids=[
        "quantile",
        "no-mutations",
        "constant",
        "empty-list",
        "bad-dist",
        "interval",
        "resample",
        "factors",
        "mode",
    ],
)
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pbt(**kwargs)
