"""Median stopping decisions, worked by hand from Ray's MedianStoppingRule."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune_operator.sweeps.algorithms.median import Median, MissingMetric


def median(**kwargs: Any) -> Median:
    options: dict[str, Any] = {
        "metric": "acc",
        "mode": "max",
        "grace_period": 1,
        "min_samples_required": 2,
        **kwargs,
    }
    return Median(**options)


def result(t: float, acc: float) -> dict[str, float]:
    return {"training_iteration": t, "acc": acc}


def feed(rule: Median, trial: str, values: list[float]) -> list[str]:
    return [rule.on_result(trial, result(t, v)) for t, v in enumerate(values, start=1)]


def test_stops_below_the_median_of_the_others_running_means() -> None:
    rule = median()
    assert feed(rule, "a", [10, 6, 20]) == ["CONTINUE"] * 3  # no others yet
    assert feed(rule, "b", [8, 8, 8]) == ["CONTINUE"] * 3  # one other < 2 required
    # c at t=1: running means up to t=1 are a 10, b 8: median 9; best 9.5 -> continue
    # c at t=2: a (10+6)/2 = 8, b 8: median 8; best 9.5 -> continue
    # c at t=3: a (10+6+20)/3 = 12, b 8: median 10; best 9.6 < 10 -> stop
    assert feed(rule, "c", [9.5, 9.5, 9.6]) == ["CONTINUE", "CONTINUE", "STOP"]


def test_the_best_result_so_far_counts_not_the_latest() -> None:
    rule = median()
    feed(rule, "a", [5, 5])
    feed(rule, "b", [5, 5])
    # c's best stays 6 >= median 5 although its latest is 0
    assert feed(rule, "c", [6, 0]) == ["CONTINUE", "CONTINUE"]


def test_a_tie_with_the_median_continues() -> None:
    rule = median()
    feed(rule, "a", [4])
    feed(rule, "b", [6])
    assert rule.on_result("c", result(1, 5)) == "CONTINUE"  # median 5 == best 5
    assert rule.on_result("d", result(1, 4.9)) == "STOP"


def test_min_mode_stops_above_the_median() -> None:
    rule = median(mode="min")
    feed(rule, "a", [1.0])
    feed(rule, "b", [2.0])
    assert rule.on_result("c", result(1, 1.4)) == "CONTINUE"  # median 1.5
    assert rule.on_result("d", result(1, 1.6)) == "STOP"


def test_nothing_is_decided_before_the_grace_period() -> None:
    rule = median(grace_period=3)
    feed(rule, "a", [10, 10, 10])
    feed(rule, "b", [10, 10, 10])
    # before t=3 c is never judged; at t=3 the means count only t in [3, 3]: 10, 10
    assert feed(rule, "c", [0, 0, 9]) == ["CONTINUE", "CONTINUE", "STOP"]


def test_only_trials_that_reached_the_same_time_count() -> None:
    rule = median()
    feed(rule, "a", [10, 10, 10])
    feed(rule, "b", [10])  # b's last time is 1
    assert feed(rule, "c", [0]) == ["STOP"]  # at t=1: a and b
    rule = median()
    feed(rule, "a", [10, 10, 10])
    feed(rule, "b", [10])
    assert rule.on_result("c", result(2, 0)) == "CONTINUE"  # at t=2 only a: 1 < 2 required


def test_min_samples_required_counts_other_trials() -> None:
    rule = median(min_samples_required=3)
    for trial in ("a", "b"):
        feed(rule, trial, [10])
    assert rule.on_result("c", result(1, 0)) == "CONTINUE"  # 2 others < 3
    assert rule.on_result("d", result(1, 0)) == "STOP"  # a 10, b 10, c 0: median 10


def test_soft_stop_pauses_once_then_continues() -> None:
    rule = median(hard_stop=False)
    feed(rule, "a", [10])
    feed(rule, "b", [10])
    assert rule.on_result("c", result(1, 0)) == "PAUSE"
    assert rule.on_result("c", result(2, 0)) == "CONTINUE"


def test_yields_to_waiting_trials_when_samples_are_missing() -> None:
    rule = median(min_time_slice=2)
    assert rule.on_result("a", result(1, 1), others_waiting=True) == "PAUSE"
    assert rule.on_result("a", result(2, 1), others_waiting=True) == "CONTINUE"  # 2 - 1 <= 2
    assert rule.on_result("a", result(4, 1), others_waiting=True) == "PAUSE"  # 4 - 1 > 2
    assert rule.on_result("a", result(5, 1)) == "CONTINUE"


def test_final_results_of_completed_trials_count() -> None:
    rule = median()
    rule.on_complete("a", result(1, 10))
    rule.on_complete("b", result(1, 10))
    rule.on_complete("x")
    assert rule.on_result("c", result(1, 0)) == "STOP"


def test_missing_metric_raises() -> None:
    with pytest.raises(MissingMetric, match="acc"):
        median().on_result("a", {"training_iteration": 1})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "x"}, "mode"),
        ({"grace_period": -1}, "grace_period"),
        ({"min_samples_required": 0}, "min_samples_required"),
        ({"min_time_slice": -1}, "min_time_slice"),
    ],
    ids=["mode", "grace", "samples", "slice"],
)
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        median(**kwargs)
