"""The kube-apiserver, and separately etcd, killed and started again while jobs
run: the operator reconnects, no job ever has two worker pods, every job ends
right with every iteration once in result.json."""

from __future__ import annotations

import time
from typing import Any

import pytest
from chaos_fixtures import Tally, WorkerPodWatch
from operator_fixtures import OperatorProcess, apply, job_manifest, set_suspend, wait_condition

from localcluster.config import Layout
from localcluster.faults import component_running, kill_component, start_component
from localcluster.testing import Cluster, wait_for

pytestmark = pytest.mark.e2e

LAST = 250  # 25 s of steps: the jobs outlast both faults
# Short enough that the nodes' leases (24 s grace) do not run out meanwhile:
# a longer outage would also evict every pod of the cluster, another fault.
DOWN_S = 5.0


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_control_plane_restart_keeps_jobs_right(
    cluster: Cluster, job_ns: str, operator: OperatorProcess, s3: Any, component: str
) -> None:
    """60-90 s each, and must: two rounds of the component down and back with
    three jobs running, one of them suspended and resumed across the second
    fault, all three then run to iteration 250."""
    lay = Layout.discover()
    tally = Tally(f"{component} restarted")
    watcher = WorkerPodWatch(cluster.api, job_ns)
    watcher.start()
    manifests = {
        name: job_manifest(
            name,
            config={"sleep": 0.1},
            stop={"training_iteration": LAST},
            checkpoint={"frequency": 5},
        )
        for name in ("cp-a", "cp-b", "cp-c")
    }
    for manifest in manifests.values():
        apply(job_ns, manifest)
    wait_for(
        "every job's worker pod",
        lambda: all(watcher.pods_created(name) == 1 for name in manifests),
        timeout=120,
    )
    time.sleep(3)
    try:
        for round_ in range(2):
            kill_component(lay, component)
            tally.faults += 1
            time.sleep(DOWN_S)
            start_component(lay, component)
            if round_ == 0:
                # Suspended right after the first fault, so the second one falls
                # while cp-c's worker checkpoints and stops.
                set_suspend(job_ns, "cp-c", True)
            time.sleep(4)
    finally:
        if not component_running(lay, component):
            start_component(lay, component)
    try:
        wait_condition(job_ns, "cp-c", "Suspended", 180)
        set_suspend(job_ns, "cp-c", False)
        for name in manifests:
            wait_condition(job_ns, name, "Finished", 300)
    finally:
        watcher.stop()
    for manifest in manifests.values():
        status = tally.check_job(s3, job_ns, manifest, LAST)
        assert status.get("failures", 0) == 0, status
    assert operator.alive(), "the operator exited instead of reconnecting"
    tally.duplicate_pods = watcher.duplicates()
    tally.notes.append(f"pod watch reconnected {watcher.reconnects} times")
    tally.report()
    tally.assert_zeros()
