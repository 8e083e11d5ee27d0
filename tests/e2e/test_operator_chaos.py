"""The operator SIGKILLed at random moments during runs and started again: no
job ever has two worker pods, every job ends right, status agrees with S3."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import pytest
from operator_fixtures import (
    OperatorProcess,
    apply,
    get_job,
    job_manifest,
    kubectl,
    report_figure,
    set_suspend,
    wait_condition,
)

from kubetune.storage import open_storage
from kubetune.storage.runfolder import RunStore

pytestmark = pytest.mark.e2e

JOBS = ("chaos-a", "chaos-b", "chaos-c")


class PodWatcher(threading.Thread):
    """Polls the namespace's worker pods and remembers the most seen at once per job."""

    def __init__(self, namespace: str) -> None:
        super().__init__(daemon=True)
        self.namespace = namespace
        self.most: dict[str, int] = {}
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            out = kubectl("-n", self.namespace, "get", "pods", "-o", "json", check=False)
            if out.returncode == 0:
                counts: dict[str, int] = {}
                for pod in json.loads(out.stdout)["items"]:
                    job = pod["metadata"].get("labels", {}).get("kubetune.io/job")
                    if job and pod["status"].get("phase") not in ("Succeeded", "Failed"):
                        counts[job] = counts.get(job, 0) + 1
                for job, n in counts.items():
                    self.most[job] = max(self.most.get(job, 0), n)
            time.sleep(0.2)


def test_operator_killed_repeatedly_keeps_jobs_right(
    job_ns: str, operator: OperatorProcess, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(20261125)
    watcher = PodWatcher(job_ns)
    watcher.start()
    manifests = {}
    for name in JOBS:
        spec: dict[str, Any] = {
            "config": {"sleep": 0.1, "crash_at": 0},
            "stop": {"training_iteration": 250},
            "checkpoint": {"frequency": 5},
        }
        if name == "chaos-c":
            spec["suspend"] = False
        manifests[name] = job_manifest(name, **spec)
        apply(job_ns, manifests[name])
    try:
        for round_ in range(5):
            time.sleep(rng.uniform(0.5, 4.0))
            operator.kill()
            if round_ == 0:
                # a change made while the operator is down is still honoured
                set_suspend(job_ns, "chaos-c", True)
            time.sleep(rng.uniform(0.2, 2.0))
            operator.start()
        time.sleep(3)
        kubectl(
            "-n",
            job_ns,
            "wait",
            "--for=jsonpath={.status.phase}=Suspended",
            "tj/chaos-c",
            "--timeout=120s",
        )
        set_suspend(job_ns, "chaos-c", False)
        for name in JOBS:
            wait_condition(job_ns, name, "Complete", 300)
    finally:
        watcher.stop_flag.set()
        watcher.join(timeout=5)
    assert all(n <= 1 for n in watcher.most.values()), watcher.most
    from operator_fixtures import cluster_env

    for key, value in cluster_env().items():
        monkeypatch.setenv(key, value)
    for name in JOBS:
        status = get_job(job_ns, name)["status"]
        assert status["phase"] == "Succeeded" and status["iteration"] == 250
        assert status["failures"] == 0
        run_uri = manifests[name]["spec"]["storage"]["uri"] + f"/{job_ns}/{name}"
        store = RunStore(open_storage(run_uri, endpoint_url=cluster_env()["AWS_ENDPOINT_URL"]))
        latest = store.latest_checkpoint()
        assert latest is not None and status["latestCheckpoint"]["path"] == latest.path
        assert status["latestCheckpoint"]["iteration"] == latest.iteration
    report_figure(
        f"operator started {operator.starts} times during runs; "
        f"most worker pods per job at once: {watcher.most}"
    )
