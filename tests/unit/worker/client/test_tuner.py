"""kubetune.Tuner's translation of a Ray Tune script into a TrainableSweep,
without a cluster (the sweep it would create), and ResultGrid's choice."""

from __future__ import annotations

import pytest

import kubetune as tune
from kubetune.client.tuner import Result, ResultGrid


def test_a_ray_shaped_tuner_becomes_the_sweep_ray_users_expect():
    tuner = tune.Tuner(
        "examples.ray_class_trainable:MyTrainable",
        param_space={
            "a": tune.loguniform(0.1, 10.0),
            "b": tune.grid_search([0, 4]),
            "layers": tune.choice([2, 4]),
            "width": tune.randint(16, 64),
            "q": tune.quniform(0.0, 1.0, 0.25),
            "c": 3,
        },
        tune_config=tune.TuneConfig(
            metric="score",
            mode="max",
            num_samples=8,
            max_concurrent_trials=2,
            seed=7,
            scheduler=tune.schedulers.ASHAScheduler(max_t=32, grace_period=2, reduction_factor=3),
        ),
        run_config=tune.RunConfig(
            storage_path="s3://b/sweeps",
            stop={"training_iteration": 32},
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=4, num_to_keep=2),
        ),
        storage_secret="s3",
        resources={"nvidia.com/gpu": 1},
    )
    sweep = tuner.sweep_manifest("ab", "team")
    spec = sweep["spec"]
    assert sweep["kind"] == "TrainableSweep" and sweep["metadata"] == {
        "name": "ab",
        "namespace": "team",
    }
    assert spec["paramSpace"] == {
        "a": {"loguniform": [0.1, 10.0]},
        "b": {"grid": [0, 4]},
        "layers": {"choice": [2, 4]},
        "width": {"randint": [16, 64]},
        "q": {"quniform": [0.0, 1.0, 0.25]},
        "c": 3,
    }
    assert (spec["metric"], spec["mode"], spec["numSamples"], spec["maxConcurrent"]) == (
        "score", "max", 8, 2,
    )  # fmt: skip
    assert spec["searcher"] == {"type": "random", "seed": 7}
    assert spec["scheduler"]["type"] == "asha"
    assert (
        spec["scheduler"]["asha"]["maxT"] == 32
        and spec["scheduler"]["asha"]["reductionFactor"] == 3
    )
    template = spec["jobTemplate"]["spec"]
    assert template["trainable"] == "examples.ray_class_trainable:MyTrainable"
    assert template["checkpoint"] == {"frequency": 4, "numToKeep": 2}
    assert template["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert template["storage"] == {"uri": "s3://b/sweeps", "secretRef": {"name": "s3"}}


def test_pbt_mutations_and_missing_settings():
    pbt = tune.schedulers.PopulationBasedTraining(
        metric="acc", mode="max", perturbation_interval=8,
        hyperparam_mutations={"lr": tune.uniform(0.0, 1.0), "layers": [2, 4, 8]},
    )  # fmt: skip
    spec = pbt.to_spec()["pbt"]
    assert spec["hyperparamMutations"] == {
        "lr": {"uniform": [0.0, 1.0]},
        "layers": {"choice": [2, 4, 8]},
    }
    tuner = tune.Tuner(
        "m:T",
        tune_config=tune.TuneConfig(scheduler=pbt),
        run_config=tune.RunConfig(storage_path="s3://b/p"),
    )
    assert tuner.sweep_manifest("x", "ns")["spec"]["metric"] == "acc"  # the scheduler's metric
    with pytest.raises(tune.InvalidSettings, match="metric"):
        tune.Tuner("m:T", run_config=tune.RunConfig(storage_path="s3://b/p")).sweep_manifest(
            "x", "ns"
        )
    with pytest.raises(tune.InvalidSettings, match="storage_path"):
        tune.Tuner("m:T", tune_config=tune.TuneConfig(metric="a", mode="max")).sweep_manifest(
            "x", "ns"
        )


def test_result_grid_best_by_last_or_all():
    grid = ResultGrid(
        [
            Result(
                metrics={"loss": 0.5, "best_loss": 0.1}, config={"x": 1}, checkpoint=None, path="p1"
            ),
            Result(
                metrics={"loss": 0.2, "best_loss": 0.2}, config={"x": 2}, checkpoint=None, path="p2"
            ),
            Result(metrics={}, config={"x": 3}, checkpoint=None, path="p3", error="boom"),
        ],
        "loss",
        "min",
        {},
    )
    assert grid.get_best_result().config == {"x": 2}  # Ray's default: the last result
    assert grid.get_best_result(scope="all").config == {"x": 1}
    assert grid.errors == ["boom"] and len(grid) == 3
