"""TrainableSweep on the real local cluster: trials are TrainableJobs; ASHA
stops the weak ones at their first rung (suspended, not lost), never more
than maxConcurrent run, the best is the best of the trials' result.json; a
suspended sweep resumes to the same best; operator kills change nothing."""

# mypy: disable-error-code="arg-type,union-attr,index"

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
import yaml
from operator_fixtures import (
    BUCKET,
    SECRET,
    OperatorProcess,
    cluster_env,
    kubectl,
    read_results,
    report_figure,
    request_counts,
)

from localcluster.testing import Cluster

pytestmark = pytest.mark.e2e


def sweep_manifest(name: str, **spec: Any) -> dict[str, Any]:
    env = cluster_env()
    body: dict[str, Any] = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TrainableSweep",
        "metadata": {"name": name},
        "spec": {
            "metric": "score",
            "mode": "max",
            "paramSpace": {"quality": {"uniform": [0.0, 1.0]}, "sleep": 0.1},
            "numSamples": 16,
            "maxConcurrent": 4,
            "searcher": {"type": "random", "seed": 7},
            "scheduler": {
                "type": "asha",
                "asha": {"gracePeriod": 1, "reductionFactor": 4, "maxT": 16},
            },
            "jobTemplate": {
                "spec": {
                    "trainable": "tests.e2e.trainables:Scored",
                    "stop": {"training_iteration": 16},
                    "checkpoint": {"frequency": 1, "numToKeep": 2},
                    "storage": {
                        "uri": f"s3://{BUCKET}/sweeps-{uuid.uuid4().hex[:8]}",
                        "endpointURL": env["AWS_ENDPOINT_URL"],
                        "secretRef": {"name": SECRET},
                    },
                }
            },
        },
    }
    body["spec"].update(spec)
    return body


def get_sweep(ns: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl("-n", ns, "get", "tsw", name, "-o", "json").stdout)


def trials_of(cluster: Cluster, ns: str, sweep: str) -> list[dict[str, Any]]:
    found = cluster.custom.list_namespaced_custom_object(
        "kubetune.io", "v1alpha1", ns, "trainablejobs", label_selector=f"kubetune.io/sweep={sweep}"
    )
    return list(found["items"])


class PodCounter:
    """Samples the sweep's running worker pods every 100 ms; keeps the maximum."""

    def __init__(self, cluster: Cluster, ns: str) -> None:
        self.cluster, self.ns, self.most = cluster, ns, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            pods = self.cluster.core.list_namespaced_pod(self.ns).items
            running = [p for p in pods if p.status.phase in ("Pending", "Running")]
            self.most = max(self.most, len(running))
            time.sleep(0.1)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.most


def wait_sweep(ns: str, name: str, phase: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    sweep: dict[str, Any] = {}
    while time.monotonic() < deadline:
        sweep = get_sweep(ns, name)
        if (sweep.get("status") or {}).get("phase") == phase:
            return sweep
        if (sweep.get("status") or {}).get("phase") == "Failed":
            break
        time.sleep(0.5)
    raise AssertionError(f"sweep {name} not {phase}: {json.dumps(sweep.get('status'), indent=1)}")


def test_asha_sweep_stops_weak_trials_at_the_first_rung(
    job_ns: str, cluster: Cluster, s3: Any, operator: OperatorProcess
) -> None:
    manifest = sweep_manifest("asha")
    before = request_counts()
    kubectl("-n", job_ns, "apply", "-f", "-", input=yaml.safe_dump(manifest))
    pods = PodCounter(cluster, job_ns)
    started = time.monotonic()
    sweep = wait_sweep(job_ns, "asha", "Succeeded")
    wall = time.monotonic() - started
    most = pods.stop()
    trials = trials_of(cluster, job_ns, "asha")
    assert len(trials) == 16
    assert most <= 4, f"{most} worker pods at once"
    stopped = [
        t for t in trials if t["metadata"].get("annotations", {}).get("kubetune.io/sweep-stopped")
    ]
    at_first_rung = [
        t for t in stopped if "rung 1" in t["metadata"]["annotations"]["kubetune.io/sweep-stopped"]
    ]
    uri = manifest["spec"]["jobTemplate"]["spec"]["storage"]["uri"]
    best = max(
        r["score"]
        for t in trials
        for r in read_results(s3, f"{uri}/{job_ns}/{t['metadata']['name']}")
    )
    assert sweep["status"]["best"]["value"] == pytest.approx(best)
    assert stopped and len(at_first_rung) >= 1
    # The whole table is in S3 (status keeps only the top ten).
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    key = f"{prefix}/{job_ns}/asha/trials.json"
    table = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert sorted(t["trial"] for t in table["trials"]) == sorted(
        t["metadata"]["name"] for t in trials
    )
    assert len(sweep["status"]["top"]) == 10
    runtimes = sum((t["status"]["lastResult"] or {}).get("time_total_s", 0) for t in trials)
    after = request_counts()
    sweep_calls = {
        k: after[k] - before.get(k, 0)
        for k in after
        if ('resource="trainablejobs"' in k and ('verb="create"' in k or 'verb="patch"' in k))
        or 'resource="trainablesweeps/status"' in k
    }
    calls = ", ".join(f"{k.split('{')[1][:-1]}: {v:.0f}" for k, v in sweep_calls.items())
    per_trial = sum(sweep_calls.values()) / 16
    report_figure(
        f"sweep: the sweep controller made {per_trial:.1f} API requests per trial ({calls})"
    )
    report_figure(
        f"sweep: ASHA over 16 trials, {len(stopped)} stopped ({len(at_first_rung)} at the first "
        f"rung), at most {most} pods at once, wall {wall:.1f}s beside {runtimes:.1f}s of "
        "trial run time"
    )


def best_possible(trials: list[dict[str, Any]]) -> float:
    """What an uninterrupted run with the same seed finds: the best config runs
    to maxT (ASHA never stops the leader), and score = quality + iteration / 100."""
    return max(t["spec"]["config"]["quality"] for t in trials) + 16 / 100


def iterations_of(s3: Any, uri: str, ns: str, trial: str) -> list[int]:
    return [r["training_iteration"] for r in read_results(s3, f"{uri}/{ns}/{trial}")]


def test_suspended_sweep_resumes_to_the_same_best(
    job_ns: str, cluster: Cluster, s3: Any, operator: OperatorProcess
) -> None:
    """About 50-70 s, and must: a whole 16-trial sweep, suspended mid-way,
    resumed and run to the end, to compare its best with the uninterrupted one."""
    manifest = sweep_manifest("pausable", paramSpace={"quality": {"uniform": [0, 1]}, "sleep": 0.2})
    kubectl("-n", job_ns, "apply", "-f", "-", input=yaml.safe_dump(manifest))
    deadline = time.monotonic() + 60
    while (
        sum(
            t.get("status", {}).get("iteration", 0) > 2
            for t in trials_of(cluster, job_ns, "pausable")
        )
        < 2
    ):
        assert time.monotonic() < deadline, "no trial got going"
        time.sleep(0.2)
    patch = json.dumps({"spec": {"suspend": True}})
    kubectl("-n", job_ns, "patch", "tsw", "pausable", "--type=merge", "-p", patch)
    wait_sweep(job_ns, "pausable", "Suspended", 120)
    trials = trials_of(cluster, job_ns, "pausable")
    for t in trials:
        st = t["status"]
        assert st["phase"] in ("Suspended", "Succeeded", "Failed"), (t["metadata"]["name"], st)
        if st["phase"] == "Suspended":  # stopped with a checkpoint of its last iteration
            assert st["latestCheckpoint"]["iteration"] >= st["iteration"] - 1
    assert not [
        p for p in cluster.core.list_namespaced_pod(job_ns).items if p.status.phase == "Running"
    ]
    created_before = len(trials)

    kubectl(
        "-n",
        job_ns,
        "patch",
        "tsw",
        "pausable",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"suspend": False}}),
    )
    sweep = wait_sweep(job_ns, "pausable", "Succeeded")
    trials = trials_of(cluster, job_ns, "pausable")
    assert len(trials) == 16 and created_before <= 16
    assert sweep["status"]["best"]["value"] == pytest.approx(best_possible(trials))
    uri = manifest["spec"]["jobTemplate"]["spec"]["storage"]["uri"]
    for t in trials:
        got = iterations_of(s3, uri, job_ns, t["metadata"]["name"])
        assert got == list(range(1, len(got) + 1)), (t["metadata"]["name"], got)  # none lost


def test_operator_killed_three_times_during_an_asha_sweep(
    job_ns: str, cluster: Cluster, s3: Any, operator: OperatorProcess
) -> None:
    """About 70 s, and must: a whole 16-trial ASHA sweep (at most four pods at
    once) runs to Succeeded through three operator SIGKILLs 4 s apart, so
    that every rung is decided by a restarted operator."""
    from kubetune_operator.sweeps.algorithms.asha import Asha

    manifest = sweep_manifest("killed", paramSpace={"quality": {"uniform": [0, 1]}, "sleep": 0.2})
    kubectl("-n", job_ns, "apply", "-f", "-", input=yaml.safe_dump(manifest))
    for _ in range(3):
        time.sleep(4)
        operator.kill()
        operator.start()
    sweep = wait_sweep(job_ns, "killed", "Succeeded")
    trials = trials_of(cluster, job_ns, "killed")
    names = sorted(t["metadata"]["name"] for t in trials)
    assert names == [f"killed-t{i:04d}" for i in range(16)]  # exactly 16, none twice
    assert sweep["status"]["best"]["value"] == pytest.approx(best_possible(trials))
    # The recorded decisions, replayed in order, give exactly the recorded stops.
    recorded = sorted(
        (d, t["metadata"]["name"])
        for t in trials
        for d in json.loads(
            t["metadata"].get("annotations", {}).get("kubetune.io/sweep-decisions", "[]")
        )
    )
    seqs = [d[0] for d, _ in recorded]
    assert len(seqs) == len(set(seqs)), "a decision was made twice"
    asha = Asha(metric="score", mode="max", grace_period=1, reduction_factor=4, max_t=16, seed=7)
    replayed = {
        name
        for d, name in recorded
        if asha.on_result(name, {"training_iteration": d[1], "score": d[2]})[0] == "STOP"
    }
    stopped = {
        t["metadata"]["name"]
        for t in trials
        if t["metadata"].get("annotations", {}).get("kubetune.io/sweep-stopped")
    }
    assert replayed == stopped


def test_pbt_members_continue_from_the_donors_checkpoint_with_explored_configs(
    job_ns: str, cluster: Cluster, s3: Any, operator: OperatorProcess
) -> None:
    manifest = sweep_manifest(
        "pbt",
        paramSpace={"quality": {"uniform": [0.0, 1.0]}, "sleep": 0.3},
        numSamples=4,
        maxConcurrent=4,
        scheduler={
            "type": "pbt",
            "pbt": {
                "perturbationInterval": 4,
                "quantileFraction": 0.25,
                "resampleProbability": 0.25,
                "hyperparamMutations": {"quality": {"uniform": [0.0, 1.0]}},
                "seed": 3,
            },
        },
    )
    manifest["spec"]["jobTemplate"]["spec"]["checkpoint"] = {"frequency": 4}
    kubectl("-n", job_ns, "apply", "-f", "-", input=yaml.safe_dump(manifest))
    wait_sweep(job_ns, "pbt", "Succeeded", 300)
    trials = trials_of(cluster, job_ns, "pbt")
    exploited = [
        t for t in trials if t["metadata"].get("annotations", {}).get("kubetune.io/sweep-exploit")
    ]
    assert exploited, "no member was exploited"
    uri = manifest["spec"]["jobTemplate"]["spec"]["storage"]["uri"]
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    for t in exploited:
        name = t["metadata"]["name"]
        exploit = json.loads(t["metadata"]["annotations"]["kubetune.io/sweep-exploit"])
        donor_iteration = int(exploit["checkpoint"].rstrip("/").rsplit("_", 1)[-1])
        rows = read_results(s3, f"{uri}/{job_ns}/{name}")
        assert rows[0]["training_iteration"] == donor_iteration + 1, (name, exploit, rows[0])
        params = json.loads(
            s3.get_object(Bucket=bucket, Key=f"{prefix}/{job_ns}/{name}/params.json")["Body"].read()
        )
        assert params == exploit["config"] == t["spec"]["config"]
        assert t["spec"]["restoreFrom"] == exploit["checkpoint"]
    report_figure(f"sweep: PBT over 4 members made {len(exploited)} exploits")


def test_bad_sweeps_say_why_and_do_not_hang(
    job_ns: str, cluster: Cluster, operator: OperatorProcess
) -> None:
    unsampleable = sweep_manifest("unsampleable", paramSpace={"lr": {"loguniform": [0, 1]}})
    bad_template = sweep_manifest("bad-template")
    bad_template["spec"]["jobTemplate"]["spec"]["trainable"] = "not a module path"
    silent = sweep_manifest("silent", metric="accuracy", numSamples=2)
    failing = sweep_manifest(
        "failing",
        paramSpace={"fail_in_setup": True},
        numSamples=4,
        maxConcurrent=2,
        maxFailedTrials=1,
        scheduler={"type": "fifo"},
    )
    failing["spec"]["jobTemplate"]["spec"]["trainable"] = "tests.e2e.trainables:Counter"
    failing["spec"]["jobTemplate"]["spec"]["maxFailures"] = 0
    for m in (unsampleable, bad_template, silent, failing):
        kubectl("-n", job_ns, "apply", "-f", "-", input=yaml.safe_dump(m))

    def failed_with(name: str) -> str:
        sweep: dict[str, Any] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            sweep = get_sweep(job_ns, name)
            cond = next(
                (
                    c
                    for c in (sweep.get("status") or {}).get("conditions") or []
                    if c["type"] == "Failed"
                ),
                {},
            )
            if cond.get("status") == "True":
                return f"{cond['reason']}: {cond['message']}"
            time.sleep(0.5)
        raise AssertionError(f"{name} did not fail: {sweep}")

    assert failed_with("unsampleable").startswith("InvalidSpec: paramSpace.lr")
    assert "trainable" in failed_with("bad-template")
    why = failed_with("failing")
    assert why.startswith("MaxFailedTrials: 2 trials failed (maxFailedTrials=1)"), why
    assert "dataset path /nope" in why
    sweep = wait_sweep(job_ns, "silent", "Succeeded", 120)
    missing = next(c for c in sweep["status"]["conditions"] if c["type"] == "MetricMissing")
    assert "never reported 'accuracy'" in missing["message"], missing


@pytest.mark.parametrize("example", ["asha-sweep.yaml", "pbt-sweep.yaml"])
def test_example_sweeps_run_and_kubectl_shows_progress(
    job_ns: str, cluster: Cluster, operator: OperatorProcess, example: str
) -> None:
    """30-65 s each, and must: each example sweep of examples/sweeps runs as
    written (16 ASHA trials, a PBT population) to Succeeded."""
    from operator_fixtures import REPO

    manifest = yaml.safe_load((REPO / "examples" / "sweep" / example).read_text())
    storage = manifest["spec"]["jobTemplate"]["spec"]["storage"]
    storage.update(uri=f"s3://{BUCKET}/examples-{uuid.uuid4().hex[:8]}")
    storage["endpointURL"] = cluster_env()["AWS_ENDPOINT_URL"]
    name = manifest["metadata"]["name"]
    kubectl("-n", job_ns, "apply", "-f", "-", input=yaml.safe_dump(manifest))
    sweep = wait_sweep(job_ns, name, "Succeeded", 400)
    table = kubectl("-n", job_ns, "get", "tsw", name).stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "TRIALS", "RUNNING", "DONE", "BEST", "AGE"]
    cells = row.split()
    total = sweep["status"]["trials"]["total"]
    assert cells[:5] == [name, "Succeeded", str(total), "0", str(total)], table
    assert float(cells[5]) == pytest.approx(sweep["status"]["best"]["value"], rel=1e-3)


def test_median_stopping_stops_trials_below_the_median(
    job_ns: str, cluster: Cluster, operator: OperatorProcess
) -> None:
    manifest = sweep_manifest(
        "median",
        paramSpace={"quality": {"grid": [0.9, 0.8, 0.7, 0.1, 0.05, 0.0]}, "sleep": 0.3},
        numSamples=1,
        maxConcurrent=6,
        scheduler={"type": "median", "median": {"gracePeriod": 2, "minSamplesRequired": 2}},
    )
    kubectl("-n", job_ns, "apply", "-f", "-", input=yaml.safe_dump(manifest))
    sweep = wait_sweep(job_ns, "median", "Succeeded", 300)
    trials = trials_of(cluster, job_ns, "median")
    stopped = {
        t["spec"]["config"]["quality"]
        for t in trials
        if t["metadata"]
        .get("annotations", {})
        .get("kubetune.io/sweep-stopped", "")
        .startswith("median:")
    }
    # 0.9 and 0.8 can never fall below a median of two or more others; 0.7 can,
    # when only 0.9 and 0.8 had reached its step (the median rule, as in Ray,
    # compares with the trials that got there first).
    assert stopped & {0.1, 0.05, 0.0} and stopped <= {0.7, 0.1, 0.05, 0.0}, stopped
    assert sweep["status"]["best"]["config"]["quality"] == 0.9
