"""ASHA decisions, worked by hand from Ray's AsyncHyperBandScheduler behaviour."""

from __future__ import annotations

import random

import pytest

from kubetune_operator.sweeps.algorithms.asha import (
    Asha,
    MissingMetric,
    count_milestones,
    percentile,
)


def asha(mode: str = "max", **kwargs: float) -> Asha:
    options = {"grace_period": 1, "reduction_factor": 4, "max_t": 16, **kwargs}
    return Asha(metric="acc", mode=mode, **options)


def result(it: float, acc: float) -> dict[str, float]:
    return {"training_iteration": it, "acc": acc}


def test_milestones_grace_1_rf_4_max_t_16() -> None:
    # 1 * 4**k <= 16 for k = 0, 1, 2: MAX_RUNGS = 3, iterated highest first.
    assert asha().milestones == [[16, 4, 1]]
    assert asha(brackets=2).milestones == [[16, 4, 1], [16, 4]]
    assert asha(grace_period=2, reduction_factor=3, max_t=100).milestones == [[54, 18, 6, 2]]


def test_milestone_count_is_exact_where_float_logs_round_down() -> None:
    # int(log(1000) / log(10) + 1) == 3 in floating point; the milestones are 1, 10, 100, 1000.
    assert count_milestones(1, 10, 1000) == 4
    assert count_milestones(1, 4, 15) == 2


# Values reported at iteration 1, one trial each, in this order. The cutoff is
# the 75th percentile (1 - 1/4) of the values recorded at rung 1 before:
#   t0 5: nothing recorded                                   -> CONTINUE
#   t1 1: [5]          pos 0            cutoff 5             -> STOP (1 < 5)
#   t2 9: [1, 5]       pos 0.75: 5 - 4 * 0.25 = 4            -> CONTINUE
#   t3 3: [1, 5, 9]    pos 1.5:  9 - 4 * 0.5  = 7            -> STOP
#   t4 7: [1, 3, 5, 9] pos 2.25: 5 + 4 * 0.25 = 6            -> CONTINUE
#   t5 6: [1, 3, 5, 7, 9] pos 3: 7                           -> STOP
#   t6 7: [1, 3, 5, 6, 7, 9] pos 3.75: 7 - 1 * 0.25 = 6.75   -> CONTINUE
#   t7 6.9: [1, 3, 5, 6, 7, 7, 9] pos 4.5: 7 + 0 * 0.5 = 7    -> STOP
# (a stopped trial's value is still recorded, as in Ray: t5's 6 counts for t6)
VALUES = [5, 1, 9, 3, 7, 6, 7, 6.9]
EXPECTED = ["CONTINUE", "STOP", "CONTINUE", "STOP", "CONTINUE", "STOP", "CONTINUE", "STOP"]


def test_rung_cutoff_is_the_75th_percentile_of_earlier_values() -> None:
    scheduler = asha()
    got = [scheduler.on_result(f"t{i}", result(1, v)) for i, v in enumerate(VALUES)]
    assert got == [(decision, 1) for decision in EXPECTED]


def test_min_mode_negates_the_metric() -> None:
    scheduler = asha(mode="min")
    got = [scheduler.on_result(f"t{i}", result(1, -v))[0] for i, v in enumerate(VALUES)]
    assert got == EXPECTED


def test_increasing_values_always_continue_and_first_at_a_rung_continues() -> None:
    scheduler = asha()
    assert [scheduler.on_result(f"t{i}", result(1, i))[0] for i in range(16)] == ["CONTINUE"] * 16
    # t15 is the first to reach rung 4: no cutoff there yet, whatever its value.
    assert scheduler.on_result("t15", result(4, -100)) == ("CONTINUE", 4)


def test_one_decision_per_rung_at_the_first_result_reaching_it() -> None:
    scheduler = asha()
    scheduler.on_result("good", result(1, 10))
    assert scheduler.on_result("bad", result(1, 1)) == ("STOP", 1)
    # later results of a trial below its next rung are not judged again
    assert scheduler.on_result("good", result(2, 0)) == ("CONTINUE", None)
    assert scheduler.on_result("good", result(3, 0)) == ("CONTINUE", None)


def test_a_result_past_a_rung_records_the_highest_rung_first_then_the_lower_ones() -> None:
    scheduler = asha()
    scheduler.on_result("other", result(1, 100))
    # iteration 5 records into rung 4 (empty: continue), not into rung 1
    assert scheduler.on_result("late", result(5, 1)) == ("CONTINUE", 4)
    # its next result records into rung 1, which it skipped, as Ray does: 1 < 100
    assert scheduler.on_result("late", result(6, 1)) == ("STOP", 1)
    assert scheduler.on_result("late", result(7, 1)) == ("CONTINUE", None)


def test_max_t_stops() -> None:
    scheduler = asha()
    assert scheduler.on_result("t", result(15, 1)) == ("CONTINUE", 4)
    assert scheduler.on_result("t", result(16, 1)) == ("STOP", None)
    assert asha().on_result("u", result(40, 1)) == ("STOP", None)


def test_nan_values_do_not_count_in_the_cutoff() -> None:
    scheduler = asha()
    assert scheduler.on_result("a", result(1, float("nan"))) == ("CONTINUE", 1)
    assert scheduler.on_result("b", result(1, -5)) == ("CONTINUE", 1)
    assert scheduler.on_result("c", result(1, -6)) == ("STOP", 1)


def test_missing_metric_names_the_key_and_what_the_result_has() -> None:
    scheduler = asha()
    with pytest.raises(MissingMetric) as err:
        scheduler.on_result("t", {"training_iteration": 1, "loss": 0.1})
    assert isinstance(err.value, KeyError)
    assert str(err.value) == "result has no 'acc'; it has ['loss', 'training_iteration']"
    with pytest.raises(MissingMetric, match="training_iteration"):
        scheduler.on_result("t", {"acc": 1})


def test_replay_gives_the_same_decisions() -> None:
    rng = random.Random(3)
    stream = []
    for it in range(1, 17):
        for t in range(12):
            if rng.random() < 0.8:
                stream.append((f"t{t}", result(it, rng.random())))

    def run() -> list[tuple[str, float | None]]:
        scheduler = asha(brackets=2)
        return [scheduler.on_result(trial, res) for trial, res in stream]

    first = run()
    assert first == run()
    assert {decision for decision, _ in first} == {"CONTINUE", "STOP"}


def test_brackets_are_chosen_per_trial_by_a_seeded_softmax() -> None:
    scheduler = asha(brackets=2)
    chosen = [scheduler.bracket_of(f"trial-{i}") for i in range(2000)]
    assert chosen == [asha(brackets=2).bracket_of(f"trial-{i}") for i in range(2000)]
    # sizes 3 and 2: p(bracket 0) = 1 / (1 + e**-1) = 0.731
    assert 0.69 < chosen.count(0) / len(chosen) < 0.77
    assert asha(brackets=2, seed=1).bracket_of("x") in (0, 1)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([1.0], 0.75, 1.0), ([1, 5], 0.75, 4.0), ([3, 1, 2, 4], 0.5, 2.5), ([], 0.5, None)],
    ids=["one", "two", "median-even", "empty"],
)
def test_percentile_interpolates_linearly(values: list, q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "best"}, "mode must be 'min' or 'max'"),
        ({"grace_period": 0}, "grace_period must be > 0"),
        ({"reduction_factor": 1}, "reduction_factor must be > 1"),
        ({"max_t": 0.5}, "max_t must be >= grace_period"),
        ({"brackets": 4}, r"brackets must be an integer in 1\.\.3"),
        ({"brackets": 0}, "brackets must be an integer"),
    ],
    ids=["mode", "grace", "rf", "max_t", "too-many-brackets", "zero-brackets"],
)
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        asha(**kwargs)
