"""Failures on the real cluster: a killed worker restarts from its checkpoint,
repeated crashes end Failed, an eviction counts as a preemption, and hopeless
jobs end Failed with a clear reason while the operator keeps serving others."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest
from operator_fixtures import (
    BUCKET,
    apply,
    condition,
    get_job,
    job_manifest,
    job_pods,
    kubectl,
    phase_is,
    wait_condition,
    wait_for,
)

pytestmark = pytest.mark.e2e


def test_killed_worker_restarts_from_checkpoint_and_counts_a_failure(job_ns: str) -> None:
    apply(
        job_ns,
        job_manifest(
            "crashy",
            config={"sleep": 0.1},
            stop={"training_iteration": 30},
            checkpoint={"frequency": 3},
            maxFailures=2,
        ),
    )
    job = wait_for(
        job_ns,
        "crashy",
        lambda j: ((j.get("status") or {}).get("latestCheckpoint") or {}).get("iteration", 0) >= 6,
        what="a checkpoint at iteration 6",
    )
    pid = int(job["status"]["lastResult"]["pid"])
    os.kill(pid, signal.SIGKILL)
    wait_condition(job_ns, "crashy", "Complete", 150)
    status = get_job(job_ns, "crashy")["status"]
    assert status["failures"] == 1 and status["preemptions"] == 0
    assert status["attempt"] == 2 and status["iteration"] == 30


def test_past_max_failures_the_job_fails_with_the_reason(job_ns: str) -> None:
    apply(
        job_ns,
        job_manifest(
            "doomed",
            config={"sleep": 0.02, "crash_at": 5},
            stop={"training_iteration": 30},
            checkpoint={"frequency": 2},
            maxFailures=1,
        ),
    )
    wait_condition(job_ns, "doomed", "Failed", 150)
    job = get_job(job_ns, "doomed")
    failed = condition(job, "Failed")
    assert failed["reason"] == "MaxFailuresExceeded", failed
    assert "crash on purpose" in failed["message"]
    assert job["status"]["failures"] == 2
    assert condition(job, "Finished")["status"] == "True"


def test_eviction_counts_a_preemption_not_a_failure(job_ns: str) -> None:
    apply(
        job_ns,
        job_manifest(
            "evicted",
            config={"sleep": 0.1},
            stop={"training_iteration": 40},
            checkpoint={"frequency": 5},
        ),
    )
    job = wait_for(job_ns, "evicted", lambda j: (j.get("status") or {}).get("iteration", 0) >= 5)
    pod = job["status"]["workerPod"]
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": job_ns},
    }
    kubectl(
        "create",
        "--raw",
        f"/api/v1/namespaces/{job_ns}/pods/{pod}/eviction",
        "-f",
        "-",
        input=json.dumps(eviction),
    )
    wait_condition(job_ns, "evicted", "Complete", 150)
    status = get_job(job_ns, "evicted")["status"]
    assert status["preemptions"] == 1 and status["failures"] == 0


HOPELESS = [
    pytest.param(
        {"trainable": "no_such_module:Thing"},
        "InvalidTrainable",
        "no_such_module",
        id="import-error",
    ),
    pytest.param(
        {"config": {"fail_in_setup": True}, "maxFailures": 0},
        "MaxFailuresExceeded",
        "setup failed on purpose",
        id="raises-in-setup",
    ),
    pytest.param(
        {"storage_bucket": "no-such-bucket"}, "StorageError", "no-such-bucket", id="missing-bucket"
    ),
    pytest.param({"bad_credentials": True}, "StorageError", "credentials", id="wrong-credentials"),
    pytest.param(
        {"restoreFrom": f"s3://{BUCKET}/nowhere/ns/job/checkpoint_000040"},
        "InvalidCheckpoint",
        "does not exist",
        id="restore-missing",
    ),
    pytest.param(
        {"restore_incomplete": True}, "InvalidCheckpoint", "incomplete", id="restore-incomplete"
    ),
]


@pytest.mark.parametrize(("change", "reason", "text"), HOPELESS)
def test_hopeless_jobs_fail_clearly_while_others_run(
    job_ns: str, s3: Any, change: dict[str, Any], reason: str, text: str
) -> None:
    apply(job_ns, job_manifest("bystander", config={"sleep": 0.1}, stop={"training_iteration": 30}))
    manifest = job_manifest("hopeless", config={"sleep": 0.01}, stop={"training_iteration": 5})
    spec = manifest["spec"]
    change = dict(change)
    if bucket := change.pop("storage_bucket", None):
        spec["storage"]["uri"] = f"s3://{bucket}/runs"
    if change.pop("bad_credentials", False):
        kubectl(
            "-n",
            job_ns,
            "create",
            "secret",
            "generic",
            "wrong",
            "--from-literal=AWS_ACCESS_KEY_ID=nobody",
            "--from-literal=AWS_SECRET_ACCESS_KEY=wrong-secret",
        )
        spec["storage"]["secretRef"] = {"name": "wrong"}
    if change.pop("restore_incomplete", False):
        key = "half/ns/job/checkpoint_000003/checkpoint.pkl"
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"half an upload")
        spec["restoreFrom"] = f"s3://{BUCKET}/half/ns/job/checkpoint_000003"
    if "config" in change:
        spec["config"].update(change.pop("config"))
    spec.update(change)
    apply(job_ns, manifest)
    wait_condition(job_ns, "hopeless", "Failed")
    job = get_job(job_ns, "hopeless")
    failed = condition(job, "Failed")
    assert failed["reason"] == reason, failed
    assert text in failed["message"], failed
    assert "\n" not in failed["message"] and len(failed["message"]) < 1100
    assert "wrong-secret" not in json.dumps(job)
    # the operator kept serving the other job
    bystander = wait_for(job_ns, "bystander", phase_is("Running", "Succeeded"))
    assert bystander["status"]["phase"] in ("Running", "Succeeded")


def test_a_job_recreated_under_the_same_name_never_mixes_runs(job_ns: str, s3: Any) -> None:
    manifest = job_manifest("again", config={"sleep": 0.01}, stop={"training_iteration": 3})
    apply(job_ns, manifest)
    wait_condition(job_ns, "again", "Complete")
    kubectl("-n", job_ns, "delete", "tj", "again", "--wait=true")
    apply(job_ns, manifest)  # same name, same storage folder, a new uid
    wait_condition(job_ns, "again", "Failed")
    failed = condition(get_job(job_ns, "again"), "Failed")
    assert failed["reason"] == "RunFolderConflict", failed
    assert f"{job_ns}/again" in failed["message"], failed
    # the first run's results are untouched
    bucket, _, prefix = manifest["spec"]["storage"]["uri"][len("s3://") :].partition("/")
    key = f"{prefix}/{job_ns}/again/result.json"
    lines = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
    assert [json.loads(x)["training_iteration"] for x in lines] == [1, 2, 3]


def test_active_deadline_fails_the_job_and_stops_its_worker(job_ns: str) -> None:
    apply(
        job_ns,
        job_manifest(
            "slowpoke",
            config={"sleep": 0.2},
            stop={"training_iteration": 1000},
            activeDeadlineSeconds=4,
        ),
    )
    wait_condition(job_ns, "slowpoke", "Failed")
    job = get_job(job_ns, "slowpoke")
    assert condition(job, "Failed")["reason"] == "DeadlineExceeded"
    # stopped with SIGTERM, so it still saved where it was
    wait_for(job_ns, "slowpoke", lambda j: not live_pods(job_ns, "slowpoke"), what="no live pod")


def test_deleting_a_job_removes_its_pods_and_keeps_its_data(job_ns: str, s3: Any) -> None:
    manifest = job_manifest(
        "deleted",
        config={"sleep": 0.1},
        stop={"training_iteration": 1000},
        checkpoint={"frequency": 3},
    )
    apply(job_ns, manifest)
    wait_for(
        job_ns,
        "deleted",
        lambda j: ((j.get("status") or {}).get("latestCheckpoint") or {}).get("iteration", 0) >= 3,
        what="a first checkpoint",
    )
    kubectl("-n", job_ns, "delete", "tj", "deleted", "--wait=true", "--timeout=60s")
    deadline = time.monotonic() + 90
    while live_pods(job_ns, "deleted") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not live_pods(job_ns, "deleted")
    bucket, _, prefix = manifest["spec"]["storage"]["uri"][len("s3://") :].partition("/")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{job_ns}/deleted/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert any(k.endswith("result.json") for k in keys)
    assert any(k.endswith(".kubetune-manifest.json") for k in keys)


def live_pods(namespace: str, name: str) -> list[dict[str, Any]]:
    return [
        p
        for p in job_pods(namespace, name)
        if p["status"].get("phase") not in ("Succeeded", "Failed")
    ]
