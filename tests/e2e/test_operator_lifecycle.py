"""TrainableJob end to end on the real local cluster: run to completion, report
into status, suspend and resume without loss, restore from another job."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest
from operator_fixtures import (
    apply,
    condition,
    get_job,
    job_manifest,
    job_pods,
    kubectl,
    object_exists,
    phase_is,
    read_results,
    report_figure,
    set_suspend,
    time_checkpoint_upload,
    wait_condition,
    wait_for,
)

pytestmark = pytest.mark.e2e


def iteration_of(job: dict[str, Any]) -> int:
    return int((job.get("status") or {}).get("iteration") or 0)


def test_job_runs_to_complete_with_status_and_checkpoint_in_s3(job_ns: str, s3: Any) -> None:
    manifest = job_manifest(
        "quick",
        config={"sleep": 0.05},
        stop={"training_iteration": 12},
        checkpoint={"frequency": 5, "atEnd": True, "numToKeep": 2, "scoreAttribute": "score"},
    )
    apply(job_ns, manifest)
    for cond in ("Complete", "Finished"):
        wait_condition(job_ns, "quick", cond)
    job = get_job(job_ns, "quick")
    status = job["status"]
    assert job["metadata"]["generation"] == 1  # the operator never writes spec
    # ... nor metadata: no finalizer, no bookkeeping annotation (GitOps sees no drift).
    assert not job["metadata"].get("finalizers")
    assert not [a for a in job["metadata"].get("annotations") or {} if "kubetune.io" in a]
    assert status["phase"] == "Succeeded" and status["iteration"] == 12
    assert status["lastResult"]["training_iteration"] == 12
    latest = status["latestCheckpoint"]
    assert latest["iteration"] == 12 and latest["path"].endswith("checkpoint_000012")
    assert object_exists(s3, latest["path"] + "/.kubetune-manifest.json")
    assert status["bestCheckpoint"]["iteration"] == 12
    assert len(status["checkpoints"]) <= 2
    assert condition(job, "Checkpointed")["status"] == "True"
    assert status["completionTime"] and status["startTime"]
    table = kubectl("-n", job_ns, "get", "tj").stdout
    header = table.splitlines()[0].split()
    assert header[:5] == ["NAME", "PHASE", "ITERATION", "CHECKPOINT", "AGE"], table
    assert table.splitlines()[1].split()[1:4] == ["Succeeded", "12", "12"], table
    # a finished job leaves no running pod
    assert all(p["status"]["phase"] in ("Succeeded", "Failed") for p in job_pods(job_ns, "quick"))
    events = kubectl(
        "-n", job_ns, "get", "events", "--field-selector", "involvedObject.name=quick"
    ).stdout
    assert "Succeeded" in events and "CheckpointCommitted" in events


def test_results_reach_status_quickly(job_ns: str) -> None:
    apply(job_ns, job_manifest("latency", config={"sleep": 0.2}, stop={"training_iteration": 150}))
    lags: list[float] = []
    seen: set[int] = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = get_job(job_ns, "latency").get("status") or {}
        result = status.get("lastResult") or {}
        it = result.get("training_iteration")
        if it and it not in seen and "reported_at" in result:
            seen.add(it)
            lags.append(time.time() - float(result["reported_at"]))
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(0.05)
    assert len(lags) >= 20, f"too few results observed: {lags}"
    lags.sort()
    p50 = statistics.median(lags)
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    report_figure(
        f"result-to-status latency over {len(lags)} results: p50={p50:.2f}s p99={p99:.2f}s"
    )
    assert p50 < 2.0


def test_suspend_keeps_progress_and_resume_continues(job_ns: str, s3: Any) -> None:
    manifest = job_manifest(
        "pausable",
        config={"sleep": 0.2, "payload_mb": 4},
        stop={"training_iteration": 40},
        checkpoint={"frequency": 0, "atEnd": True},
    )
    apply(job_ns, manifest)
    job = wait_for(job_ns, "pausable", lambda j: iteration_of(j) >= 8, what="iteration 8")
    reached = iteration_of(job)
    t0 = time.monotonic()
    set_suspend(job_ns, "pausable", True)
    job = wait_for(job_ns, "pausable", phase_is("Suspended"), what="Suspended")
    suspend_s = time.monotonic() - t0
    status = job["status"]
    ckpt = status["latestCheckpoint"]
    assert ckpt["iteration"] >= reached, (ckpt, reached)
    assert condition(job, "Suspended")["status"] == "True"
    assert job_pods(job_ns, "pausable") == []
    upload_s = time_checkpoint_upload(manifest["spec"]["storage"]["uri"] + "/upload-probe", 4)
    report_figure(
        f"suspend: {suspend_s:.2f}s from suspend=true to Suspended "
        f"(checkpoint at iteration {ckpt['iteration']}); "
        f"committing a 4 MiB checkpoint to the same S3 takes {upload_s:.2f}s"
    )

    set_suspend(job_ns, "pausable", False)
    wait_condition(job_ns, "pausable", "Complete", 150)
    results = read_results(s3, manifest["spec"]["storage"]["uri"] + f"/{job_ns}/pausable")
    iterations = [r["training_iteration"] for r in results]
    assert set(iterations) == set(range(1, 41)), iterations
    # resumed right after the checkpoint: at most the iteration in flight is repeated
    resumed_at = next(
        i
        for i, r in enumerate(results)
        if r["iterations_since_restore"] == 1 and r["training_iteration"] > 1
    )
    assert results[resumed_at]["training_iteration"] == ckpt["iteration"] + 1
    assert len(iterations) - len(set(iterations)) <= 1
    final = get_job(job_ns, "pausable")["status"]
    assert final["failures"] == 0 and final["preemptions"] == 0


def test_restore_from_another_jobs_checkpoint(job_ns: str) -> None:
    apply(
        job_ns,
        job_manifest(
            "source",
            config={"sleep": 0.02},
            stop={"training_iteration": 12},
            checkpoint={"frequency": 10},
        ),
    )
    wait_condition(job_ns, "source", "Complete")
    source = get_job(job_ns, "source")
    ckpt10 = next(c for c in source["status"]["checkpoints"] if c["iteration"] == 10)["path"]
    manifest = job_manifest(
        "fork", config={"sleep": 0.02}, stop={"training_iteration": 15}, restoreFrom=ckpt10
    )
    apply(job_ns, manifest)
    wait_condition(job_ns, "fork", "Complete")
    fork = get_job(job_ns, "fork")
    assert fork["status"]["restoredFrom"] == ckpt10
    assert fork["status"]["iteration"] == 15


def test_gpu_job_runs_on_a_gpu_node_and_sees_its_gpu(job_ns: str) -> None:
    apply(
        job_ns,
        job_manifest(
            "gpu",
            config={"sleep": 0.05},
            stop={"training_iteration": 3},
            resources={"limits": {"nvidia.com/gpu": 1}},
        ),
    )
    wait_condition(job_ns, "gpu", "Complete")
    job = get_job(job_ns, "gpu")
    pods = job_pods(job_ns, "gpu")
    assert pods and pods[0]["spec"]["nodeName"] in ("kt-gpu1", "kt-gpu2")
    assert job["status"]["lastResult"]["gpu_ids"] in ("0", "1")


def test_function_trainable_runs_as_a_job(job_ns: str) -> None:
    apply(
        job_ns,
        job_manifest(
            "func",
            trainable="examples.ray_function_trainable:train_func",
            config={"steps": 12, "step_seconds": 0.02},
            stop={"training_iteration": 100},
        ),
    )
    wait_condition(job_ns, "func", "Complete")
    status = get_job(job_ns, "func")["status"]
    assert status["iteration"] == 12
    # the function checkpoints every 5 steps: its latest is at iteration 10
    assert status["latestCheckpoint"]["path"].endswith("checkpoint_000010")
