"""Per-iteration cost of kubetune's loop (every result persisted to a local
result.json, progress file kept) beside Ray Tune's bare `Trainable.train()`
and Ray's `Tuner.fit()`, on the same trivial step, in one process.

    .venv/bin/python bench/loop_overhead.py            # Ray parts need `pip install 'ray[tune]'`
    .venv/bin/python bench/loop_overhead.py --quick    # fewer iterations
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import kubetune


class _StepHooks:
    """The trivial step both frameworks run, the same code under each base class."""

    def step(self) -> dict[str, Any]:
        return {"loss": 0.5}

    # Both frameworks checkpoint a class trainable at the end by default.
    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
        return {}

    def load_checkpoint(self, checkpoint: Any) -> None:
        pass


class StepOnly(_StepHooks, kubetune.Trainable):
    pass


def _us_per_call(call: Callable[[], Any], n: int) -> float:
    """Microseconds per call of `call`, over n calls in a bare loop."""
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n * 1e6


def per_iter_train(cls: Any, n: int) -> float:
    trainable = cls(config={})
    us = _us_per_call(trainable.train, n)
    trainable.stop()
    shutil.rmtree(trainable.logdir, ignore_errors=True)  # a fresh folder per instance
    return us


def per_iter_step(n: int) -> float:
    trainable = StepOnly(config={})
    us = _us_per_call(trainable.step, n)
    shutil.rmtree(trainable.logdir, ignore_errors=True)
    return us


def per_iter_kubetune_run(n: int) -> float:
    folder = tempfile.mkdtemp(prefix="kubetune-bench-")
    try:
        start = time.perf_counter()
        out = kubetune.run(
            StepOnly,
            stop={"training_iteration": n},
            storage=folder,
            verbose=0,
        )
        elapsed = time.perf_counter() - start
        with open(os.path.join(folder, "result.json"), "rb") as f:
            lines = sum(1 for _ in f)
        assert out.ok and lines == n, (out.message, lines)
        return elapsed / n * 1e6
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def ray_trainable() -> Any:
    """Ray's StepOnly, or None when Ray is not importable."""
    try:
        from ray import tune
    except ImportError:
        return None

    class RayStepOnly(_StepHooks, tune.Trainable):
        pass

    return RayStepOnly


def ray_tuner(cls: Any, n_tuner: int) -> dict[str, float]:
    import ray
    from ray import tune

    class Clock(tune.Callback):
        def __init__(self) -> None:
            self.times: dict[int, float] = {}

        def on_trial_result(
            self, iteration: Any, trials: Any, trial: Any, result: Any, **_: Any
        ) -> None:
            self.times[result["training_iteration"]] = time.perf_counter()

    out: dict[str, float] = {}
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    out["ray_init_s"] = time.perf_counter() - t0
    clock = Clock()
    folder = tempfile.mkdtemp(prefix="ray-bench-")
    try:
        start = time.perf_counter()
        tune.Tuner(
            cls,
            run_config=tune.RunConfig(
                stop={"training_iteration": n_tuner},
                storage_path=folder,
                callbacks=[clock],
                verbose=0,
            ),
        ).fit()
        out["tuner_wall"] = (time.perf_counter() - start) / n_tuner * 1e6
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    first = min(100, n_tuner // 2)
    if first in clock.times and n_tuner in clock.times:
        span = clock.times[n_tuner] - clock.times[first]
        out["tuner_steady"] = span / (n_tuner - first) * 1e6
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray measurements")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n_train = 20_000 if args.quick else 100_000
    n_run = 50_000 if args.quick else 100_000
    n_tuner = 500 if args.quick else 2000
    ray_cls = None if args.no_ray else ray_trainable()

    # Interleaved repeats: a neighbour's load hits every measurement alike.
    runs: dict[str, list[float]] = {"step": [], "kt_train": [], "kt_run": [], "ray_train": []}
    for _ in range(args.repeats):
        runs["step"].append(per_iter_step(n_train))
        runs["kt_train"].append(per_iter_train(StepOnly, n_train))
        if ray_cls is not None:
            runs["ray_train"].append(per_iter_train(ray_cls, n_train))
        runs["kt_run"].append(per_iter_kubetune_run(n_run))
    tuner = ray_tuner(ray_cls, n_tuner) if ray_cls is not None else {}

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"{'measurement (us per iteration)':54s} {'best':>8s} {'median':>8s}")
    labels = {
        "step": "step() alone (floor)",
        "kt_train": "kubetune Trainable.train()",
        "kt_run": f"kubetune.run, {n_run} iters, every result persisted",
        "ray_train": "Ray Trainable.train()",
    }
    best = {k: min(v) for k, v in runs.items() if v}
    median = {k: statistics.median(v) for k, v in runs.items() if v}
    for key, label in labels.items():
        if key in best:
            print(f"{label:54s} {best[key]:8.2f} {median[key]:8.2f}")
    if tuner:
        print(f"{f'Ray Tuner.fit(), {n_tuner} iters, wall / iters':54s} {tuner['tuner_wall']:8.0f}")
        if "tuner_steady" in tuner:
            print(
                f"{'Ray Tuner.fit(), steady state (result 100 -> last)':54s} "
                f"{tuner['tuner_steady']:8.0f}"
            )
        print(f"(ray.init took {tuner['ray_init_s']:.1f} s, not included)")
    if "ray_train" in best:
        for name, pick in (("best", best), ("median", median)):
            print(
                f"ratios ({name}): kubetune.run / Ray train() = "
                f"{pick['kt_run'] / pick['ray_train']:.2f}, kubetune train() / Ray train() = "
                f"{pick['kt_train'] / pick['ray_train']:.2f}"
            )
        if tuner:
            print(f"Ray Tuner.fit() / kubetune.run = {tuner['tuner_wall'] / median['kt_run']:.0f}x")
    else:
        print("Ray not importable: pip install 'ray[tune]' (the bench extra) to compare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
