"""The S3 server away for 60 s while workers report and upload checkpoints: no
job fails (workers retry with backoff), no partial checkpoint is trusted,
result.json holds every iteration once, and status converges."""

from __future__ import annotations

import time
from typing import Any

import pytest
from chaos_fixtures import Tally, WorkerPodWatch, run_store
from operator_fixtures import (
    OperatorProcess,
    apply,
    get_job,
    job_manifest,
    wait_condition,
    wait_for,
)

from localcluster.config import Layout
from localcluster.faults import component_running, kill_component, start_component
from localcluster.testing import Cluster

pytestmark = pytest.mark.e2e

OUTAGE_S = 60
LAST = 150


def test_s3_away_for_a_minute_loses_nothing(
    cluster: Cluster, job_ns: str, operator: OperatorProcess, s3: Any
) -> None:
    """About 90 s, and must: the fault is S3 gone for a whole minute (the
    outage the workers must ride out), then the jobs finish from it."""
    lay = Layout.discover()
    tally = Tally("S3 unavailable 60 s")
    watcher = WorkerPodWatch(cluster.api, job_ns)
    watcher.start()
    manifests = [
        job_manifest(
            name,
            config={"sleep": 0.1, "payload_mb": 2},
            stop={"training_iteration": LAST},
            checkpoint={"frequency": 5, "numToKeep": 3, "scoreAttribute": "score"},
        )
        for name in ("s3-out-a", "s3-out-b")
    ]
    for manifest in manifests:
        apply(job_ns, manifest)
    for manifest in manifests:
        wait_for(
            job_ns,
            manifest["metadata"]["name"],
            lambda job: (
                ((job.get("status") or {}).get("latestCheckpoint") or {}).get("iteration", 0) >= 10
            ),
            timeout=120,
            what="a first checkpoint",
        )
    before = {m["metadata"]["name"]: get_job(job_ns, m["metadata"]["name"]) for m in manifests}
    restarted_in = 0.0
    try:
        kill_component(lay, "s3")
        tally.faults += 1
        time.sleep(OUTAGE_S)
        during = {m["metadata"]["name"]: get_job(job_ns, m["metadata"]["name"]) for m in manifests}
        restarted_in = start_component(lay, "s3")
    finally:
        if not component_running(lay, "s3"):  # the test failed mid-outage: leave S3 up
            start_component(lay, "s3")
    try:
        for manifest in manifests:
            wait_condition(job_ns, manifest["metadata"]["name"], "Finished", 240)
    finally:
        watcher.stop()
    for manifest in manifests:
        name = manifest["metadata"]["name"]
        status = tally.check_job(s3, job_ns, manifest, LAST)
        # Workers rode the outage out: the same pod all along, nothing counted.
        assert status.get("failures", 0) == 0 and status.get("preemptions", 0) == 0, status
        assert watcher.pods_created(name) == 1, watcher.created
        # The job was still running through the outage, not ended by it.
        assert during[name]["status"]["phase"] == "Running", during[name]["status"]
        assert before[name]["status"]["phase"] == "Running"
        latest = run_store(manifest, job_ns).latest_checkpoint()
        assert latest is not None and latest.iteration == LAST
        assert status["latestCheckpoint"]["path"] == latest.path
    tally.duplicate_pods = watcher.duplicates()
    tally.notes.append(f"S3 served again {restarted_in:.1f}s after its start")
    tally.report()
    tally.assert_zeros()
