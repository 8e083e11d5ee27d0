"""The PyTorch example (examples/pytorch) on the real local cluster, on CPU: a
job suspended mid-run and resumed reports, bit for bit, the losses an
uninterrupted `kubetune run` reports; a job given a GPU its torch cannot use
fails with the reason instead of training on CPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

# Skipped where torch is not installed, as pytest.importorskip("torch") would,
# but without importing it here: the pods import it, and this process would
# only carry its ~700 MiB for the rest of the session.
if importlib.util.find_spec("torch") is None:
    pytest.skip(
        "the PyTorch example needs torch: pip install -e '.[examples]'", allow_module_level=True
    )

from operator_fixtures import (
    apply,
    condition,
    get_job,
    job_manifest,
    job_pods,
    phase_is,
    read_results,
    report_figure,
    set_suspend,
    wait_condition,
    wait_for,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TRAINABLE = "examples.pytorch.trainable:TorchTrainable"
# Long enough (about 40 ms an iteration) that the suspend lands mid-run, short
# enough to keep the test near half a minute.
STOP = 100


def example_manifest(name: str, **spec: Any) -> dict[str, Any]:
    """examples/pytorch/job.yaml with the test's storage and name."""
    example = yaml.safe_load((REPO / "examples/pytorch/job.yaml").read_text())
    manifest = job_manifest(name, trainable=example["spec"]["trainable"])
    for key in ("config", "checkpoint"):
        manifest["spec"][key] = example["spec"][key]
    manifest["spec"].update(spec)
    return manifest


def iteration_of(job: dict[str, Any]) -> int:
    return int((job.get("status") or {}).get("iteration") or 0)


def test_suspend_and_resume_continue_the_loss_curve_exactly(
    job_ns: str, s3: Any, tmp_path: Path
) -> None:
    manifest = example_manifest("torch", stop={"training_iteration": STOP})
    spec = manifest["spec"]
    assert spec["trainable"] == TRAINABLE
    apply(job_ns, manifest)
    # The uninterrupted reference, by the SDK's local runner, beside the job.
    reference = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "kubetune"),
            "run",
            TRAINABLE,
            "--config",
            json.dumps(spec["config"]),
            "--stop",
            f"training_iteration={STOP}",
            "--storage",
            str(tmp_path / "reference"),
            "--quiet",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    job = wait_for(job_ns, "torch", lambda j: iteration_of(j) >= 5, timeout=180, what="iter 5")
    t0 = time.monotonic()
    set_suspend(job_ns, "torch", True)
    job = wait_for(job_ns, "torch", phase_is("Suspended"), timeout=120, what="Suspended")
    suspend_s = time.monotonic() - t0
    stopped_at = job["status"]["latestCheckpoint"]["iteration"]
    assert 5 <= stopped_at < STOP, f"the suspend did not land mid-run: {job['status']}"
    assert job_pods(job_ns, "torch") == []

    set_suspend(job_ns, "torch", False)
    wait_condition(job_ns, "torch", "Complete", 240)
    out, _ = reference.communicate(timeout=240)
    assert reference.returncode == 0, out

    results = read_results(s3, f"{spec['storage']['uri']}/{job_ns}/torch")
    expected = [
        json.loads(line)
        for line in (tmp_path / "reference" / "result.json").read_text().splitlines()
    ]
    assert [r["training_iteration"] for r in results] == list(range(1, STOP + 1))
    assert [r["training_iteration"] for r in expected] == list(range(1, STOP + 1))
    resumed = results[stopped_at]  # training_iteration stopped_at + 1
    assert resumed["iterations_since_restore"] == 1, resumed
    assert {r["device"] for r in results} == {"cpu"}
    # Exactly the same floats, before the suspend and after it.
    losses = [r["loss"] for r in results]
    assert losses == [r["loss"] for r in expected]
    assert [r["accuracy"] for r in results] == [r["accuracy"] for r in expected]
    assert resumed["samples"] == expected[stopped_at]["samples"]  # the data stream's position

    around = slice(stopped_at - 2, stopped_at + 2)
    shown = ", ".join(f"{r['training_iteration']}: {r['loss']!r}" for r in results[around])
    report_figure(
        f"pytorch example: suspended at iteration {stopped_at} ({suspend_s:.2f}s to Suspended), "
        f"resumed to {STOP}; losses around the suspend {shown} - all {STOP} equal to the "
        f"uninterrupted run's; final loss {losses[-1]!r}"
    )


def test_a_gpu_job_whose_torch_cannot_use_cuda_fails_with_the_reason(job_ns: str) -> None:
    # The local cluster's GPU nodes are fake: the pod is given GPU ids, but
    # torch finds no CUDA device, as on a node without the NVIDIA driver.
    manifest = example_manifest(
        "torch-gpu",
        stop={"training_iteration": 3},
        resources={"limits": {"nvidia.com/gpu": 1}},
        maxFailures=0,
    )
    apply(job_ns, manifest)
    wait_condition(job_ns, "torch-gpu", "Failed", 180)
    job = get_job(job_ns, "torch-gpu")
    failed = condition(job, "Failed")
    assert "(NVIDIA_VISIBLE_DEVICES)" in failed["message"], failed
    assert "Refusing to train on CPU" in failed["message"], failed
    assert iteration_of(job) == 0
