"""The Node and Lease objects the node agent writes for each of its nodes, as a
kubelet registers and renews them, and the node's own facts its pods share
(their IP is the node's address, its GPUs are `nvidia.com/gpu`)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

GPU = "nvidia.com/gpu"
# What NVIDIA's GPU feature discovery puts on a node with GPUs (Kueue flavors select on it).
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
POD_IP = "127.0.0.1"


def now_rfc3339(now: datetime.datetime) -> str:
    return now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro(now: datetime.datetime) -> str:
    return now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_stamp() -> str:
    """The time now, as the API writes it (RFC 3339, in seconds)."""
    return now_rfc3339(datetime.datetime.now(datetime.timezone.utc))


def node_labels(name: str, gpus: int) -> dict[str, str]:
    """The labels a node registers with: the kubelet's, plus the GPU feature
    discovery's `nvidia.com/gpu.present: "true"` when it has GPUs."""
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    }
    if gpus > 0:
        labels[GPU_PRESENT_LABEL] = "true"
    return labels


def build_node(name: str, labels: Mapping[str, str] | None = None, gpus: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {**node_labels(name, gpus), **(labels or {})},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
    }


def build_node_status(
    name: str, gpus: int, port: int, version: str, now: datetime.datetime, since: str
) -> dict[str, Any]:
    resources = {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    resources[GPU] = str(gpus)
    stamp = now_rfc3339(now)

    def cond(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": since,
        }

    return {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "enough memory"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "enough PIDs"),
            cond("Ready", "True", "KubeletReady", "the kubetune node agent is posting ready"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": POD_IP},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": name,
            "systemUUID": name,
            "bootID": name,
            "kernelVersion": "",
            "osImage": "kubetune local node agent",
            "containerRuntimeVersion": "process://0.1",
            "kubeletVersion": version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


def build_lease(name: str, node_uid: str, now: datetime.datetime) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": "kube-node-lease",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}
            ],
        },
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro(now)},
    }
