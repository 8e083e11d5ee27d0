"""What kubetune's loop costs a real PyTorch training run: the example's model
trained by a plain PyTorch loop and by `kubetune.run`, with the same work
(seeds, steps, checkpoint every K iterations to a local folder), each in a
fresh process so its peak memory is its own. Prints throughput, peak memory
and the overhead; on a GPU, GPU memory (torch.cuda.max_memory_allocated).

    python -m examples.pytorch.bench_gpu                    # on a GPU node (device auto)
    python -m examples.pytorch.bench_gpu --device cpu --hidden 256 --batch-size 256

Run it from the repository root (or the image's /app). No GPU was measured
with it yet; docs/gpu.md keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = ("plain", "kubetune")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: CUDA when torch sees a GPU (unlike the Trainable's rule, which "
                        "follows the pod's nvidia.com/gpu request)")  # fmt: skip
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--steps-per-iteration", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--features", type=int, default=256)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--checkpoint-frequency", type=int, default=25)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0: torch's default")
    p.add_argument("--repeat", type=int, default=3, help="runs of each variant")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # a child process
    return p.parse_args(argv)


def config_of(args: argparse.Namespace, device: str) -> dict[str, Any]:
    return {
        "device": device,
        "features": args.features,
        "hidden": args.hidden,
        "batch_size": args.batch_size,
        "steps_per_iteration": args.steps_per_iteration,
        "num_threads": args.threads,
    }


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"--device cuda, but torch {torch.__version__} sees no CUDA device "
            f"(built for CUDA {torch.version.cuda or 'none: a CPU-only build'}); "
            "run on a GPU node with a CUDA build of torch, or pass --device cpu"
        )
    return requested


def warm_up(cfg: dict[str, Any]) -> None:
    """A few steps on a throwaway model: kernel selection, allocator pools and
    thread pools start before the clock does, for both variants alike."""
    import torch

    from examples.pytorch.trainable import DEFAULTS, Training

    Training({**DEFAULTS, **cfg}, torch.device(cfg["device"])).iteration()


def run_plain(cfg: dict[str, Any], args: argparse.Namespace, folder: Path) -> float:
    """The loop a PyTorch user writes: train, and torch.save every K iterations."""
    import torch

    from examples.pytorch.trainable import DEFAULTS, Training

    training = Training({**DEFAULTS, **cfg}, torch.device(cfg["device"]))
    loss = float("nan")
    for i in range(1, args.iterations + 1):
        loss = training.iteration()["loss"]
        if args.checkpoint_frequency and i % args.checkpoint_frequency == 0:
            torch.save(training.state_dict(), folder / f"checkpoint_{i:06d}.pt")
    return loss


def run_kubetune(cfg: dict[str, Any], args: argparse.Namespace, folder: Path) -> float:
    import kubetune
    from examples.pytorch.trainable import TorchTrainable

    result = kubetune.run(
        TorchTrainable,
        config=cfg,
        stop={"training_iteration": args.iterations},
        storage=folder,
        checkpoint={"frequency": args.checkpoint_frequency, "at_end": False},
        verbose=0,
    )
    if not result.metrics:
        raise SystemExit(f"the kubetune run reported no result: {result.reason}: {result.message}")
    return float(result.metrics["loss"])


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One variant, timed, in this (fresh) process."""
    import torch

    cfg = config_of(args, resolve_device(args.device))
    warm_up(cfg)
    cuda = cfg["device"] == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix=f"bench-{args.variant}-") as tmp:
        start = time.perf_counter()
        run = run_plain if args.variant == "plain" else run_kubetune
        loss = run(cfg, args, Path(tmp))
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    samples = args.iterations * args.steps_per_iteration * args.batch_size
    return {
        "variant": args.variant,
        "seconds": seconds,
        "samples_per_s": samples / seconds,
        "final_loss": loss,
        # Linux reports ru_maxrss in KiB
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "device": cfg["device"],
        "device_name": torch.cuda.get_device_name() if cuda else cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return f"CPU ({os.cpu_count()} CPUs)"


def run_child(variant: str, argv: list[str]) -> dict[str, Any]:
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "examples.pytorch.bench_gpu", *argv, "--variant", variant],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"the {variant} run failed:\n{proc.stderr.strip() or proc.stdout}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def summarize(runs: dict[str, list[dict[str, Any]]], samples: int) -> dict[str, Any]:
    median = {v: statistics.median(r["seconds"] for r in runs[v]) for v in VARIANTS}
    # The best run shows the cost with the least interference from the rest of
    # the machine; the median, what a run typically takes.
    best = {v: min(r["seconds"] for r in runs[v]) for v in VARIANTS}
    first = {v: runs[v][0] for v in VARIANTS}
    return {
        "device": first["plain"]["device"],
        "device_name": first["plain"]["device_name"],
        "torch": first["plain"]["torch"],
        "threads": first["plain"]["threads"],
        "variants": {
            v: {
                "median_s": median[v],
                "best_s": best[v],
                "samples_per_s": samples / median[v],
                "peak_rss_mib": max(r["peak_rss_mib"] for r in runs[v]),
                "peak_gpu_mib": first[v]["peak_gpu_mib"],
                "final_loss": first[v]["final_loss"],
                "runs_s": [round(r["seconds"], 3) for r in runs[v]],
            }
            for v in VARIANTS
        },
        "overhead_pct": 100 * (median["kubetune"] / median["plain"] - 1),
        "overhead_best_pct": 100 * (best["kubetune"] / best["plain"] - 1),
        # Same seeds, same work: a different loss would mean the comparison is unfair.
        "same_final_loss": first["plain"]["final_loss"] == first["kubetune"]["final_loss"],
    }


def print_table(summary: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"{summary['device_name']} [{summary['device']}], torch {summary['torch']}, "
        f"{summary['threads']} CPU threads; {args.iterations} iterations x "
        f"{args.steps_per_iteration} steps x batch {args.batch_size}, MLP "
        f"{args.features}-{args.hidden}-{args.hidden}-4, checkpoint every "
        f"{args.checkpoint_frequency}; {args.repeat} runs each, samples/s by the median"
    )
    print(
        f"{'loop':<10}{'median s':>10}{'best s':>10}{'samples/s':>12}"
        f"{'peak RSS MiB':>14}{'peak GPU MiB':>14}"
    )
    for v, row in summary["variants"].items():
        gpu = f"{row['peak_gpu_mib']:.0f}" if row["peak_gpu_mib"] is not None else "-"
        print(
            f"{v:<10}{row['median_s']:>10.3f}{row['best_s']:>10.3f}{row['samples_per_s']:>12,.0f}"
            f"{row['peak_rss_mib']:>14.0f}{gpu:>14}"
        )
    same = "same" if summary["same_final_loss"] else "DIFFERENT"
    print(
        f"kubetune loop overhead: {summary['overhead_pct']:+.1f}% wall time by the median, "
        f"{summary['overhead_best_pct']:+.1f}% by the best run; "
        f"final loss {same} ({summary['variants']['plain']['final_loss']!r})"
    )


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.variant:
        print(json.dumps(child(args)))
        return
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeat):
        for v in VARIANTS:  # interleaved, so a slow patch of the machine hits both
            runs[v].append(run_child(v, argv))
    summary = summarize(runs, args.iterations * args.steps_per_iteration * args.batch_size)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print_table(summary, args)


if __name__ == "__main__":
    main()
