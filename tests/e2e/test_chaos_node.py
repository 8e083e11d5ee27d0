"""A node lost with a job's worker on it (its agent and processes killed at once,
as a machine dies): the control plane marks it NotReady and evicts its pods;
the job counts a preemption, not a failure, and resumes on another node from
the latest checkpoint it had."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from chaos_fixtures import Tally, WorkerPodWatch, restore_points, run_store, run_uri
from operator_fixtures import (
    OperatorProcess,
    apply,
    job_manifest,
    job_pods,
    kubectl,
    read_results,
    wait_condition,
    wait_for,
)

from localcluster.config import Layout, NodeSpec
from localcluster.faults import LoseableNode, stale_settings
from localcluster.testing import Cluster
from localcluster.testing import wait_for as wait_until

pytestmark = pytest.mark.e2e

NODE = "kt-lost"
FALLBACK = "kt-cpu"
LAST = 150


@pytest.fixture
def lost_node(cluster: Cluster) -> Iterator[LoseableNode]:
    lay = Layout.discover()
    stale = stale_settings(lay)
    if stale:
        pytest.fail(
            f"the running cluster lacks {', '.join(stale)}: it was started before these "
            "settings; run `make cluster-down && make cluster-up`"
        )
    node = LoseableNode(lay, NodeSpec(NODE, 0))
    node.start()
    wait_until(f"node {NODE} Ready", lambda: _ready(NODE) == "True", timeout=60)
    yield node
    if node.running():
        node.lose()
    kubectl("delete", "node", NODE, "--wait=false", check=False)


def _node(name: str) -> dict[str, Any]:
    out = kubectl("get", "node", name, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def _ready(name: str) -> str | None:
    for cond in (_node(name).get("status") or {}).get("conditions") or []:
        if cond["type"] == "Ready":
            return str(cond["status"])
    return None


def test_node_lost_mid_run_is_a_preemption(
    cluster: Cluster, job_ns: str, operator: OperatorProcess, s3: Any, lost_node: LoseableNode
) -> None:
    """About 90 s, and must: a lost node is seen only after the node monitor's
    grace period (24 s) and the pod's toleration (10 s), then the job resumes
    elsewhere from its checkpoint and runs to iteration 150."""
    tally = Tally("node lost")
    watcher = WorkerPodWatch(cluster.api, job_ns)
    watcher.start()
    # The pod may run on the lost node or the CPU node, and prefers the first.
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/hostname",
                                "operator": "In",
                                "values": [NODE, FALLBACK],
                            }
                        ]
                    }
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "preference": {
                        "matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE]}
                        ]
                    },
                }
            ],
        }
    }
    manifest = job_manifest(
        "node-lost",
        config={"sleep": 0.1},
        stop={"training_iteration": LAST},
        checkpoint={"frequency": 5},
        template={"spec": {"affinity": affinity}},
    )
    apply(job_ns, manifest)
    wait_for(
        job_ns,
        "node-lost",
        lambda job: (
            ((job.get("status") or {}).get("latestCheckpoint") or {}).get("iteration", 0) >= 15
        ),
        timeout=120,
        what="a checkpoint on the node to lose",
    )
    first = job_pods(job_ns, "node-lost")
    assert [p["spec"]["nodeName"] for p in first] == [NODE], "the pod did not land on the node"
    killed = lost_node.lose()
    tally.faults += 1
    # The checkpoint the next attempt must start from: the latest complete one now.
    latest = run_store(manifest, job_ns).latest_checkpoint()
    assert latest is not None and killed >= 1
    wait_until(f"node {NODE} NotReady", lambda: _ready(NODE) in ("False", "Unknown"), timeout=90)
    # The taint manager evicts the pod once its toleration (10 s) runs out.
    evicted = wait_until(
        "the pod's eviction by the control plane",
        lambda: [
            c
            for p in job_pods(job_ns, "node-lost")
            if p["metadata"]["uid"] == first[0]["metadata"]["uid"]
            for c in p["status"].get("conditions") or []
            if c["type"] == "DisruptionTarget" and c["status"] == "True"
        ],
        timeout=90,
    )
    # Nothing confirms that a dead node's processes stopped, so the pod stays
    # Terminating; the administrator says so with the out-of-service taint (the
    # Kubernetes procedure for a node shut down for good), and the pod GC
    # removes the pod.
    kubectl("taint", "node", NODE, "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute")
    try:
        wait_condition(job_ns, "node-lost", "Finished", 240)
    finally:
        watcher.stop()
    status = tally.check_job(s3, job_ns, manifest, LAST)
    assert status.get("preemptions") == 1 and status.get("failures", 0) == 0, status
    nodes = [p["spec"]["nodeName"] for p in job_pods(job_ns, "node-lost")]
    assert nodes == [FALLBACK], nodes
    assert watcher.pods_created("node-lost") == 2, watcher.created
    rows = read_results(s3, run_uri(manifest, job_ns))
    assert restore_points(rows) == [latest.iteration], (restore_points(rows), latest)
    tally.duplicate_pods = watcher.duplicates()
    tally.notes.append(
        f"evicted ({evicted[0]['reason']}), resumed on {FALLBACK} from iteration {latest.iteration}"
    )
    tally.report()
    tally.assert_zeros()
