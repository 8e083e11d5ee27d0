"""The sweep controller's pure parts, without a cluster: trials as it sees them,
the trial it builds, counts and the best, spec validation, and the scheduler
wrappers' decisions and replay (ASHA, PBT)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubetune_operator.sweeps.plan import (
    ANN_DECISIONS,
    ANN_STOPPED,
    SweepStatus,
    Trial,
    best_result,
    build_trial,
    code_problem,
    count,
    members,
    ranking,
    template_view,
    trial_name,
    trial_view,
)
from kubetune_operator.sweeps.schedulers.registry import make_scheduler, validate
from kubetune_operator.sweeps.schedulers.stopping import AshaScheduler

SWEEP: dict[str, Any] = {
    "metadata": {"name": "s", "namespace": "ns", "uid": "sweep-uid", "generation": 1},
    "spec": {
        "metric": "score",
        "mode": "max",
        "paramSpace": {"q": {"uniform": [0, 1]}, "k": {"grid": [1, 2]}},
        "numSamples": 3,
        "maxConcurrent": 2,
        "searcher": {"type": "random", "seed": 7},
        "scheduler": {"type": "asha", "asha": {"gracePeriod": 1, "reductionFactor": 4, "maxT": 16}},
        "jobTemplate": {
            "metadata": {"labels": {"team": "a"}},
            "spec": {
                "trainable": "m:T",
                "stop": {"training_iteration": 16},
                "storage": {"uri": "s3://b/p"},
            },
        },
    },
}


def trial(
    index: int, phase: str = "Running", iteration: int = 0, generation: int = 0, **ann: str
) -> Trial:
    body = build_trial(SWEEP, index, {"q": index / 10}, generation=generation)
    body["metadata"]["annotations"].update(ann)
    if ANN_STOPPED in ann:
        body["spec"]["suspend"] = True  # a stop is recorded with the suspend that acts on it
    body["status"] = {"phase": phase, "iteration": iteration, "lastResult": {"score": index}}
    return Trial.from_job(body)


def test_a_trial_is_the_template_with_its_config_owned_by_the_sweep():
    body = build_trial(SWEEP, 7, {"q": 0.5})
    assert body["metadata"]["name"] == trial_name("s", 7) == "s-t0007"
    assert body["metadata"]["labels"] == {
        "team": "a",
        "kubetune.io/sweep": "s",
        "kubetune.io/sweep-trial": "7",
        "kubetune.io/sweep-generation": "0",
    }
    owner = body["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "TrainableSweep",
        "sweep-uid",
        True,
    )
    assert body["spec"]["config"] == {"q": 0.5} and body["spec"]["trainable"] == "m:T"
    assert build_trial(SWEEP, 7, {}, generation=2)["metadata"]["name"] == "s-t0007-g2"


def test_counts_and_what_counts_against_max_concurrent():
    trials = [
        trial(0, "Succeeded"),
        trial(1, "Running", **{ANN_STOPPED: "asha: ..."}),
        trial(2, "Suspended", **{ANN_STOPPED: "asha: ..."}),
        trial(3, "Running"),
        trial(4, "Pending"),
    ]
    c = count(members(trials), total=6)
    assert (c.created, c.succeeded, c.stopped, c.running, c.pending, c.done) == (5, 1, 2, 1, 1, 3)
    active = [t.index for t in trials if t.active]
    assert active == [1, 3, 4]  # a stopped trial still stopping holds a pod


def test_members_are_the_newest_generation():
    current = members([trial(0, generation=0), trial(0, generation=1), trial(1)])
    assert current[0].name == "s-t0000-g1" and current[1].name == "s-t0001"


def test_best_and_status():
    ranked = ranking([trial(1), trial(3), trial(2)], "score", "max")
    assert [t.index for _, _, t in ranked] == [3, 2, 1]
    st = SweepStatus.start(SWEEP, "2026-01-01T00:00:00Z")
    current = members([trial(1), trial(3)])
    st.results(list(current.values()), current, SWEEP["spec"])
    assert st.st["best"]["trial"] == "s-t0003" and st.st["best"]["value"] == 3.0
    st.phase("Succeeded", "Finished", "done")
    types = {c["type"]: c["status"] for c in st.st["conditions"]}
    assert types["Complete"] == types["Finished"] == "True"


def test_validate_names_the_field():
    assert validate(SWEEP["spec"]) == ""
    bad = json.loads(json.dumps(SWEEP["spec"]))
    bad["paramSpace"] = {"lr": {"loguniform": [0, 1]}}
    assert validate(bad).startswith("paramSpace.lr")
    bad = json.loads(json.dumps(SWEEP["spec"]))
    bad["jobTemplate"]["spec"]["config"] = {"x": 1}
    assert validate(bad).startswith("jobTemplate.spec.config")
    bad = json.loads(json.dumps(SWEEP["spec"]))
    bad["scheduler"] = {"type": "asha", "asha": {"reductionFactor": 1}}
    assert validate(bad).startswith("scheduler.asha: reduction_factor")
    bad = json.loads(json.dumps(SWEEP["spec"]))
    bad["scheduler"] = {"type": "pbt", "pbt": {"hyperparamMutations": {"q": {"uniform": [0, 1]}}}}
    assert "maxConcurrent >= 6" in validate(bad)


def test_asha_decides_once_per_rung_and_replays_the_same():
    sched = make_scheduler(SWEEP["spec"])
    assert isinstance(sched, AshaScheduler) and sched.total == 6
    rows = [{"training_iteration": i, "score": float(i)} for i in range(1, 6)]
    t0 = trial(0, iteration=5)
    assert sched.due(t0)
    made = sched.decide(t0, rows, seq=1)
    assert made is not None and made[0][:3] == [1, 1, 1.0] and made[1] == ""  # first at rung 1
    recorded = [made[0]]
    t0 = trial(0, iteration=5, **{ANN_DECISIONS: json.dumps(recorded)})
    again = make_scheduler(SWEEP["spec"])
    for d in recorded:
        again.replay(t0, d)
    made = again.decide(t0, rows, seq=2)
    assert made is not None and made[0][1] == 4  # the next rung, not rung 1 twice
    # A weaker trial at rung 1 after three strong ones stops.
    sched = make_scheduler(SWEEP["spec"])
    for i, value in enumerate((5.0, 6.0, 7.0)):
        sched.replay(trial(i), [i + 1, 1, value, None])
    weak = sched.decide(trial(3, iteration=1), [{"training_iteration": 1, "score": 0.5}], 4)
    assert weak is not None and weak[1].startswith("asha: score=0.5")


def pbt_spec() -> dict[str, Any]:
    """The test sweep as a PBT population of four, perturbed every 4 iterations."""
    spec: dict[str, Any] = json.loads(json.dumps(SWEEP["spec"]))
    spec.update(
        paramSpace={"q": {"uniform": [0, 1]}},
        numSamples=4,
        maxConcurrent=4,
        scheduler={
            "type": "pbt",
            "pbt": {"perturbationInterval": 4, "hyperparamMutations": {"q": {"uniform": [0, 1]}}},
        },
    )
    return spec


def test_pbt_exploit_names_the_donors_checkpoint_at_the_perturbation_point():
    sched = make_scheduler(pbt_spec())

    def with_ckpts(i: int) -> Trial:
        t = trial(i, iteration=4)
        ckpts = [
            {"path": f"s3://b/p/ns/s-t000{i}/checkpoint_00000{n}", "iteration": n} for n in (4,)
        ]
        return Trial(**{**t.__dict__, "checkpoints": ckpts})

    trials = {i: with_ckpts(i) for i in range(4)}
    sched.set_members(trials)
    for i, value in ((1, 7.0), (2, 8.0), (3, 9.0)):  # each new one is the best so far
        made = sched.decide(trials[i], [{"training_iteration": 4, "score": value}], i)
        assert made is not None and made[0][3] is None  # not in the lower quantile
    made = sched.decide(trials[0], [{"training_iteration": 4, "score": 1.0}], 4)
    assert made is not None and made[0][3] is not None, made
    extra = made[0][3]
    assert extra["checkpoint"].endswith("checkpoint_000004") and extra["donor"].startswith("s-t000")
    assert made[1].startswith("pbt:")


def test_pbt_never_exploits_with_a_result_that_meets_the_stop_criterion():
    """As in Ray, the result that ends a member is not the scheduler's: an
    exploit there would start a generation where its donor already stopped."""
    spec = pbt_spec()
    spec["jobTemplate"]["spec"]["stop"] = {"training_iteration": 8}
    sched = make_scheduler(spec)
    ckpts = [{"path": f"s3://b/p/ns/s/checkpoint_00000{n}", "iteration": n} for n in (4, 8)]
    trials = {
        i: Trial(**{**trial(i, iteration=8).__dict__, "checkpoints": ckpts}) for i in range(4)
    }
    sched.set_members(trials)
    for i, value in ((1, 7.0), (2, 8.0), (3, 9.0)):
        sched.decide(trials[i], [{"training_iteration": 4, "score": value}], i)
    # The weakest member's last result: at the perturbation point, and its end.
    assert sched.decide(trials[0], [{"training_iteration": 8, "score": 1.0}], 4) is None
    # Below the stop, the same member is exploited (the check above can fail).
    made = sched.decide(trials[0], [{"training_iteration": 4, "score": 1.0}], 5)
    assert made is not None and made[0][3] is not None, made


SHA = "ab" * 32


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        (f"s3://b/p/ns/s/.kubetune/code/{SHA}.pkl", ""),
        (f"s3://b/p/ns/other/.kubetune/code/{SHA}.pkl", "outside the sweep's folder"),
        (f"s3://b/p/ns/s/../x/.kubetune/code/{SHA}.pkl", "outside the sweep's folder"),
    ],
    ids=["in-the-sweeps-folder", "another-folder", "climbing-out"],
)
def test_shipped_code_must_be_in_the_sweeps_own_folder(uri: str, problem: str):
    template = {
        "trainable": None,
        "code": {"uri": uri, "sha256": SHA},
        "storage": {"uri": "s3://b/p/"},
    }
    sweep = {**SWEEP, "spec": {**SWEEP["spec"], "jobTemplate": {"spec": template}}}
    found = code_problem(template_view(sweep))
    assert (problem in found) if problem else found == ""
    if problem:
        assert "s3://b/p/ns/s/.kubetune/code/<sha256>.pkl" in found


def test_a_trials_results_are_read_from_its_own_folder():
    view = trial_view(template_view(SWEEP), trial(3))
    assert (view.name, view.namespace, view.run_uri) == ("s-t0003", "ns", "s3://b/p/ns/s-t0003")


@pytest.mark.parametrize(
    ("mode", "best"),
    [("max", {"value": 0.9, "iteration": 2}), ("min", {"value": 0.1, "iteration": 3})],
)
def test_a_done_trials_best_is_judged_on_all_its_results(mode: str, best: dict[str, Any]):
    rows = [
        {"training_iteration": 1, "score": 0.5},
        {"training_iteration": 2, "score": 0.9},
        {"training_iteration": 3, "score": 0.1},
        {"training_iteration": 4, "score": True},  # not a number
        {"training_iteration": 5},
    ]
    assert best_result(rows, "score", mode) == best
    assert best_result([{"loss": 1.0}], "score", mode) == {"value": None}
