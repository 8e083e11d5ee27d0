"""Hostile and malformed input on the real cluster: settings that name no metric
of the results end the job at once with a reason; a worker pod that cannot start
says why and heals; corrupted objects in S3 are ignored by the operator and the
worker; names at their limits keep pods, labels and S3 keys valid and distinct."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from operator_fixtures import (
    BUCKET,
    OperatorProcess,
    apply,
    cluster_env,
    condition,
    get_job,
    job_manifest,
    job_pods,
    kubectl,
    phase_is,
    read_results,
    set_suspend,
    wait_condition,
    wait_for,
)
from status_schema import status_problems

import kubetune_contract as contract

pytestmark = pytest.mark.e2e


def events_of(namespace: str, name: str) -> list[dict[str, Any]]:
    out = kubectl(
        "-n", namespace, "get", "events", f"--field-selector=involvedObject.name={name}",
        "-o", "json",
    )  # fmt: skip
    return list(json.loads(out.stdout)["items"])


def run_uri(job: dict[str, Any]) -> str:
    meta = job["metadata"]
    return f"{job['spec']['storage']['uri']}/{meta['namespace']}/{meta['name']}"


def put(s3: Any, uri: str, data: bytes) -> None:
    bucket, _, key = uri[len("s3://") :].partition("/")
    s3.put_object(Bucket=bucket, Key=key, Body=data)


def test_settings_that_name_no_metric_fail_the_job_at_once(job_ns: str) -> None:
    """A misspelt stop key (class and function trainables) or score attribute
    would train forever holding its GPU; the job ends Failed at the first
    result, naming the key and the keys the result has."""
    cheap = {"config": {"sleep": 0.01}, "maxFailures": 0}
    apply(job_ns, job_manifest("stop-typo", stop={"training_iterations": 3}, **cheap))
    apply(
        job_ns,
        job_manifest("fn-typo", "tests.e2e.trainables:counting", stop={"los": 0.1}, **cheap),
    )
    apply(
        job_ns,
        job_manifest(
            "score-typo",
            stop={"training_iteration": 50},
            checkpoint={"frequency": 2, "numToKeep": 1, "scoreAttribute": "scroe"},
            **cheap,
        ),
    )
    expected = {
        "stop-typo": ("stop criterion 'training_iterations'", "'training_iteration'"),
        "fn-typo": ("stop criterion 'los'", "'loss'"),
        "score-typo": ("checkpoint score attribute 'scroe'", "'score'"),
    }
    for name, (what, meant) in expected.items():
        wait_condition(job_ns, name, "Failed", 120)
        job = get_job(job_ns, name)
        failed = condition(job, "Failed")
        assert failed["reason"] == "InvalidSettings", failed
        assert what in failed["message"] and f"did you mean {meant}?" in failed["message"]
        assert job["status"]["failures"] == 0 and job["status"]["attempt"] == 1
        assert not status_problems(job["status"])
    # The score attribute is checked once the first checkpoint is safe: kept for a restore.
    assert get_job(job_ns, "score-typo")["status"]["latestCheckpoint"]["iteration"] == 2


def test_a_missing_secret_is_named_and_the_job_runs_once_it_exists(job_ns: str) -> None:
    manifest = job_manifest("late-secret", stop={"training_iteration": 3}, config={"sleep": 0.01})
    manifest["spec"]["storage"]["secretRef"] = {"name": "created-later"}
    apply(job_ns, manifest)
    job = wait_for(
        job_ns,
        "late-secret",
        lambda j: condition(j, "Running").get("reason") == "CreateContainerConfigError",
        timeout=90,
        what="the Running condition to name the missing Secret",
    )
    running = condition(job, "Running")
    assert job["status"]["phase"] == "Pending" and running["status"] == "False"
    assert "created-later" in running["message"] and "late-secret-worker-1" in running["message"]
    warnings = [
        e
        for e in events_of(job_ns, "late-secret")
        if e["type"] == "Warning" and e["reason"] == "CreateContainerConfigError"
    ]
    assert warnings and "created-later" in warnings[0]["message"]
    time.sleep(3)  # a cause that may heal never fails the job
    assert get_job(job_ns, "late-secret")["status"]["phase"] == "Pending"

    env = cluster_env()
    kubectl(
        "-n", job_ns, "create", "secret", "generic", "created-later",
        f"--from-literal=AWS_ACCESS_KEY_ID={env['AWS_ACCESS_KEY_ID']}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={env['AWS_SECRET_ACCESS_KEY']}",
    )  # fmt: skip
    wait_condition(job_ns, "late-secret", "Complete", 120)
    status = get_job(job_ns, "late-secret")["status"]
    assert status["iteration"] == 3 and status["failures"] == 0 and status["attempt"] == 1


# Progress documents a hostile or broken writer could leave in a job's folder.
# Each job's run.json names another run, so its worker refuses the folder and
# exits without writing progress: the operator then reads this file as is.
def _hostile_progress(uid: str, uri: str) -> dict[str, bytes]:
    outside = {"path": "s3://elsewhere/x/checkpoint_000009", "iteration": 9}
    sibling = {"path": f"{uri}-2/checkpoint_000001", "iteration": 1}
    shaped = {
        "run_id": uid,
        "state": "running",
        "iteration": 7,
        "updated": time.time(),
        "last_result": {f"k{i}": 10**30 if i % 2 else "é" * 500 for i in range(400)},
        "latest_checkpoint": outside,
        "best_checkpoint": sibling,
        "checkpoints": [outside, sibling] * 30,
        "message": "x" * 50_000,
    }
    return {
        "negative": json.dumps({"run_id": uid, "iteration": -1, "updated": 1}).encode(),
        "infinite": b'{"run_id": "' + uid.encode() + b'", "iteration": Infinity}',
        "shaped": json.dumps(shaped).replace('"é', '-Infinity, "_": "é', 1).encode(),
        "huge": b'{"run_id": "' + uid.encode() + b'", "pad": "' + b"x" * 3_000_000 + b'"}',
        "garbage": b"\x00\xff not json at all",
    }


KINDS = ("negative", "infinite", "shaped", "huge", "garbage")


def test_the_operator_meets_corrupted_progress_files(
    job_ns: str, s3: Any, operator: OperatorProcess
) -> None:
    for kind in KINDS:
        apply(job_ns, job_manifest(f"corrupt-{kind}", suspend=True, maxFailures=0))
    for kind in KINDS:
        name = f"corrupt-{kind}"
        job = wait_for(job_ns, name, phase_is("Suspended"), what="Suspended")
        uri = run_uri(job)
        doc = _hostile_progress(job["metadata"]["uid"], uri)[kind]
        put(s3, f"{uri}/{contract.RUN_FILE}", json.dumps({"run_id": "another-run"}).encode())
        put(s3, f"{uri}/{contract.PROGRESS_FILE}", doc)
        set_suspend(job_ns, name, False)
    for kind in KINDS:
        name = f"corrupt-{kind}"
        wait_condition(job_ns, name, "Failed", 120)
        job = get_job(job_ns, name)
        status = job["status"]
        assert condition(job, "Failed")["reason"] == "RunFolderConflict", status
        assert not status_problems(status), (kind, status_problems(status))
        assert "latestCheckpoint" not in status and "bestCheckpoint" not in status
        assert not status.get("checkpoints")
        if kind == "shaped":  # the parts that are fine arrive, capped
            assert status["iteration"] == 7 and 0 < len(status["lastResult"]) <= 30
        else:
            assert not status.get("iteration") and not status.get("lastResult")
    assert operator.alive()
    log = operator.log_path.read_text(errors="replace")
    for kind in KINDS:
        if kind != "shaped":
            assert f"cannot read progress of {job_ns}/corrupt-{kind}" in log or (
                f"{job_ns}/corrupt-{kind}" in log and "over" in log
            ), kind
    assert f"progress of {job_ns}/corrupt-shaped names checkpoints outside" in log


def test_the_worker_ignores_damaged_and_foreign_checkpoints(job_ns: str, s3: Any) -> None:
    apply(
        job_ns,
        job_manifest(
            "damaged",
            suspend=True,
            stop={"training_iteration": 3},
            config={"sleep": 0.01},
            checkpoint={"frequency": 1},
            maxFailures=0,
        ),
    )
    job = wait_for(job_ns, "damaged", phase_is("Suspended"), what="Suspended")
    uri = run_uri(job)
    put(s3, f"{uri}/{contract.RUN_FILE}", json.dumps({"run_id": job["metadata"]["uid"]}).encode())
    manifests = {
        "checkpoint_000040": {"iteration": 40, "time": float("inf")},  # not a time
        "checkpoint_000050": {"iteration": 9, "time": 1.0},  # another folder's manifest
        "checkpoint_000060": {"iteration": 60, "time": 1.0, "metrics": "x"},
    }
    for folder, fields in manifests.items():
        put(s3, f"{uri}/{folder}/w.bin", b"w")
        manifest = {
            "kind": "kubetune-checkpoint",
            "version": 1,
            "metrics": {},
            "files": [{"path": "w.bin", "size": 1}],
            **fields,
        }
        put(s3, f"{uri}/{folder}/{contract.CHECKPOINT_MANIFEST}", json.dumps(manifest).encode())
    set_suspend(job_ns, "damaged", False)
    wait_condition(job_ns, "damaged", "Complete", 120)
    status = get_job(job_ns, "damaged")["status"]
    assert status["iteration"] == 3 and status["failures"] == 0 and not status.get("restoredFrom")
    assert status["latestCheckpoint"]["iteration"] == 3
    assert [r["training_iteration"] for r in read_results(s3, uri)] == [1, 2, 3]
    assert not status_problems(status)


def test_names_at_their_limits_stay_valid_and_distinct(job_ns: str, s3: Any) -> None:
    """A 63-character name (the most a label value holds), names that differ
    only at their ends, and Unicode in config values."""
    long_name = "n" * 52 + "-0123456789"  # 63
    names = [long_name, long_name[:-1] + "x", "a", "a-worker-1", "a.b", "a-b"]
    label = "héllo wörld ✓ 日本語 🚀 \u202e"  # includes a right-to-left override
    for name in names:
        body = job_manifest(
            name,
            "tests.e2e.trainables:Echo",
            stop={"training_iteration": 2},
            config={"label": label, "ключ": "значение", "nested": {"emoji": "🚀"}},
        )
        body["spec"]["storage"]["uri"] = f"s3://{BUCKET}/limits-{job_ns}"
        apply(job_ns, body)
    pods: dict[str, str] = {}
    for name in names:
        wait_condition(job_ns, name, "Complete", 150)
        job = get_job(job_ns, name)
        assert job["status"]["lastResult"]["label"] == label
        assert not status_problems(job["status"])
        [pod] = job_pods(job_ns, name)
        assert pod["metadata"]["labels"]["kubetune.io/job"] == name
        pods[name] = pod["metadata"]["name"]
        uri = run_uri(job)
        assert uri.endswith(f"/{job_ns}/{name}")
        rows = read_results(s3, uri)
        assert [r["training_iteration"] for r in rows] == [1, 2]
        assert rows[-1]["config"]["ключ"] == "значение" and rows[-1]["label"] == label
    assert len(set(pods.values())) == len(names)
