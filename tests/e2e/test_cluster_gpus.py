"""Acceptance of the local cluster's fake GPU nodes: the real scheduler
places `nvidia.com/gpu` requests by node capacity, and the node agent hands
each pod its own GPU ids in CUDA_VISIBLE_DEVICES."""

# The typed client takes models and marks every field Optional; these tests pass
# manifests as dicts (the client validates them) and read fields the API always sets.
# mypy: disable-error-code="arg-type,union-attr,index"

from __future__ import annotations

from typing import Any

import pytest

from localcluster.testing import Cluster, python_pod, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PRINT_GPUS = "import os; print(repr(os.environ['CUDA_VISIBLE_DEVICES']))"


def _gpu_pod(name: str, gpus: int, node: str, code: str = PRINT_GPUS) -> dict[str, object]:
    return python_pod(
        name,
        code,
        container={"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}},
        extra_spec={"nodeSelector": {"kubernetes.io/hostname": node}},
    )


def _ids(cluster: Cluster, namespace: str, pod: str) -> list[str]:
    text = cluster.logs(namespace, pod).strip().strip("'")
    return [i for i in text.split(",") if i]


def test_nodes_advertise_their_gpus(cluster: Cluster) -> None:
    # Fake nodes of the scale setup (kwok), if any are up, are not our agent's.
    nodes = {
        n.metadata.name: n
        for n in cluster.core.list_node().items
        if (n.metadata.annotations or {}).get("kwok.x-k8s.io/node") != "fake"
    }

    gpus = {name: nodes[name].status.allocatable.get("nvidia.com/gpu") for name in nodes}

    assert {k: gpus[k] for k in ("kt-cpu", "kt-gpu1", "kt-gpu2")} == {
        "kt-cpu": "0",
        "kt-gpu1": "1",
        "kt-gpu2": "2",
    }
    for node in nodes.values():
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready[0].status == "True"
        assert node.status.daemon_endpoints.kubelet_endpoint.port > 0


def test_two_gpus_do_not_fit_a_one_gpu_node(cluster: Cluster, namespace: str) -> None:
    cluster.core.create_namespaced_pod(namespace, _gpu_pod("too-big", 2, "kt-gpu1"))

    def unschedulable() -> Any:
        pod = cluster.pod(namespace, "too-big")
        conds = [c for c in pod.status.conditions or [] if c.type == "PodScheduled"]
        return conds[0] if conds and conds[0].status == "False" else None

    cond = wait_for("the scheduler to refuse the pod", unschedulable, timeout=30)

    assert cond.reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in cond.message
    pod = cluster.pod(namespace, "too-big")
    assert pod.status.phase == "Pending" and not pod.spec.node_name


def test_two_gpus_run_on_the_two_gpu_node(cluster: Cluster, namespace: str) -> None:
    cluster.core.create_namespaced_pod(namespace, _gpu_pod("fits", 2, "kt-gpu2"))

    pod = cluster.wait_pod_phase(namespace, "fits", ("Succeeded", "Failed"))

    assert pod.status.phase == "Succeeded" and pod.spec.node_name == "kt-gpu2"
    assert sorted(_ids(cluster, namespace, "fits")) == ["0", "1"]


def test_concurrent_pods_get_distinct_gpus(cluster: Cluster, namespace: str) -> None:
    code = PRINT_GPUS + "; import time; time.sleep(3)"
    for name in ("left", "right"):
        cluster.core.create_namespaced_pod(namespace, _gpu_pod(name, 1, "kt-gpu2", code))
    for name in ("left", "right"):
        cluster.wait_pod_phase(namespace, name, ("Succeeded",), timeout=60)

    left, right = _ids(cluster, namespace, "left"), _ids(cluster, namespace, "right")

    assert len(left) == len(right) == 1
    assert {left[0], right[0]} == {"0", "1"}
