"""kwok on the local cluster: fake nodes on which thousands of worker pods reach
Running and end without running a process each (the operator scale benchmark).

`python -m localcluster kwok up [--nodes N]` creates N nodes labelled
`type: kwok`, annotated `kwok.x-k8s.io/node: fake` and tainted
`kwok.x-k8s.io/node=fake:NoSchedule`, and starts kwok as a host process that
manages only those nodes and the pods bound to them. `kwok down` stops it and
deletes the nodes; `kwok status` says what runs. `make cluster-up` knows
nothing of kwok: the real nodes and the node agent are untouched.

Standalone kwok ships no stages: ours, and what each does, are in
kwok_stages.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localcluster.addons import supervise
from localcluster.addons.kwok_stages import render_stages
from localcluster.artifacts import SetupError, build_tool
from localcluster.config import Layout
from localcluster.procs import recorded_pid

# localcluster.cluster (and its certificates' library) is imported where it is
# used: the load generator imports this module for its constants alone.
if TYPE_CHECKING:
    from localcluster.cluster import Api

KWOK_VERSION = os.environ.get("KWOK_VERSION", "v0.8.0")
NAME = "kwok"  # .cluster/logs/kwok.log, .cluster/pids/kwok.pid

NODE_ANNOTATION = "kwok.x-k8s.io/node"
NODE_ANNOTATION_VALUE = "fake"
NODE_LABEL = "type"
NODE_LABEL_VALUE = "kwok"
NODE_PREFIX = "kwok-node-"
DEFAULT_NODE_COUNT = 50
# What a worker pod's template needs to land on a kwok node.
NODE_SELECTOR = {NODE_LABEL: NODE_LABEL_VALUE}
TOLERATION = {
    "key": NODE_ANNOTATION,
    "operator": "Equal",
    "value": NODE_ANNOTATION_VALUE,
    "effect": "NoSchedule",
}

# Our nodes, and only those (a label selector on the nodes' collection).
NODES_PATH = "/api/v1/nodes?labelSelector=" + urllib.parse.quote(f"{NODE_LABEL}={NODE_LABEL_VALUE}")

LEASE_DURATION_S = 40
POD_CIDR = "10.64.0.0/12"  # room for a million fake pod IPs (kwok's default is a /24)
READY_TIMEOUT_S = 120.0


def kwok_bin(lay: Layout) -> Path:
    return lay.cache / f"kwok-{KWOK_VERSION}" / "bin" / "kwok"


def node_name(index: int) -> str:
    return f"{NODE_PREFIX}{index:04d}"


def node_gpus(index: int) -> int:
    """1, 2, 3, 4, 1, 2 ...: no node fits a worker asking for more than 4 GPUs."""
    return 1 + index % 4


def node_manifest(index: int) -> dict[str, Any]:
    """A fake node: roomy enough for hundreds of worker pods, with 1-4 GPUs."""
    resources = {
        "cpu": "256",
        "memory": "1Ti",
        "pods": "1000",
        "nvidia.com/gpu": str(node_gpus(index)),
        "ephemeral-storage": "1Ti",
    }
    name = node_name(index)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {NODE_ANNOTATION: NODE_ANNOTATION_VALUE},
            "labels": {
                NODE_LABEL: NODE_LABEL_VALUE,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
            },
        },
        "spec": {
            "taints": [
                {"key": NODE_ANNOTATION, "value": NODE_ANNOTATION_VALUE, "effect": "NoSchedule"}
            ]
        },
        "status": {"allocatable": dict(resources), "capacity": dict(resources)},
    }


def kwok_argv(lay: Layout, binary: Path, stages_file: Path) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={lay.kubeconfig}",
        f"--config={stages_file}",
        f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}={NODE_ANNOTATION_VALUE}",
        f"--node-lease-duration-seconds={LEASE_DURATION_S}",
        f"--cidr={POD_CIDR}",
        "--v=WARN",  # INFO logs a line per patch: megabytes at thousands of pods
    ]


def ensure_built(lay: Layout) -> Path:
    try:
        return build_tool(lay, "kwok", kwok_bin(lay), f"kwok {KWOK_VERSION}", "1.26", 3)
    except SetupError as err:
        raise SystemExit(f"error: {err}") from None


def _ready_nodes(api: Api) -> set[str]:
    from localcluster.cluster import node_ready

    code, body = api.call("GET", NODES_PATH)
    if code != 200:
        return set()
    return {n["metadata"]["name"] for n in body["items"] if node_ready(n)}


def up(lay: Layout, count: int = DEFAULT_NODE_COUNT) -> int:
    """Creates `count` kwok nodes and starts kwok (idempotent); waits until they are Ready."""
    from localcluster.cluster import Api, healthy

    if not healthy(lay):
        print("error: the local cluster is not up: run `make cluster-up` first", file=sys.stderr)
        return 1
    binary = ensure_built(lay)
    started = time.monotonic()
    api = Api(lay)
    for index in range(count):
        code, _ = api.call("POST", "/api/v1/nodes", node_manifest(index))
        if code not in (201, 409):
            print(f"error: creating node {node_name(index)} failed: HTTP {code}", file=sys.stderr)
            return 1
    if recorded_pid(lay.pids, NAME) is None:
        folder = lay.state / "kwok"
        folder.mkdir(parents=True, exist_ok=True)
        stages_file = folder / "stages.yaml"
        stages_file.write_text(render_stages())
        supervise.start(lay, NAME, kwok_argv(lay, binary, stages_file), cwd=lay.repo)
    wanted = {node_name(i) for i in range(count)}
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not wanted <= _ready_nodes(api):
        if recorded_pid(lay.pids, NAME) is None:
            print(f"error: kwok exited: see {lay.logs / 'kwok.log'}", file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            print(
                f"error: kwok nodes not Ready after {READY_TIMEOUT_S:.0f}s: "
                f"see {lay.logs / 'kwok.log'}",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.5)
    print(
        f"kwok {KWOK_VERSION} up: {count} nodes `{NODE_LABEL}={NODE_LABEL_VALUE}` Ready "
        f"in {time.monotonic() - started:.1f}s (log {lay.logs / 'kwok.log'})",
        flush=True,
    )
    return 0


def down(lay: Layout) -> int:
    """Stops kwok and deletes its nodes (pods left on them go with the pod GC)."""
    from localcluster.cluster import Api

    supervise.stop(lay, NAME, grace_s=5)
    if lay.secrets_file.exists():
        api = Api(lay)
        with contextlib.suppress(OSError):  # the apiserver is gone: so are the nodes
            api.call("DELETE", NODES_PATH)
    print("kwok stopped, its nodes deleted")
    return 0


def status(lay: Layout) -> int:
    from localcluster.cluster import Api

    pid = recorded_pid(lay.pids, NAME)
    ready = len(_ready_nodes(Api(lay))) if lay.secrets_file.exists() and pid else 0
    print(f"kwok: {'running, pid ' + str(pid) if pid else 'not running'}; {ready} nodes Ready")
    return 0 if pid else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localcluster kwok",
        description="Fake kwok nodes on the local cluster, for the scale benchmark.",
    )
    parser.add_argument("action", choices=["up", "down", "status", "stages"])
    parser.add_argument(
        "--nodes", type=int, default=DEFAULT_NODE_COUNT, help="how many fake nodes (up)"
    )
    args = parser.parse_args(argv)
    lay = Layout.discover()
    if args.action == "stages":
        print(render_stages(), end="")
        return 0
    if args.action == "up":
        if args.nodes < 1:
            print("error: --nodes must be at least 1", file=sys.stderr)
            return 2
        return up(lay, args.nodes)
    if args.action == "down":
        return down(lay)
    return status(lay)
