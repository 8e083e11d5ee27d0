"""The node agent: registers the cluster's fake nodes (with GPUs), keeps their
status and leases fresh, watches the pods bound to them and runs each as local
processes (see pods.py), and serves their logs. It stands in for the
kubelet, so the real scheduler, controllers and `kubectl` work unchanged.

Run: python -m localcluster.nodeagent --kubeconfig K --nodes kt-cpu=0,kt-gpu1=1 ...
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from localcluster.config import DEFAULT_NODES, K8S_VERSION, NodeSpec, parse_nodes
from localcluster.nodeagent.kube import Kube, KubeError
from localcluster.nodeagent.logs import LogServer
from localcluster.nodeagent.node import (
    GPU_PRESENT_LABEL,
    build_lease,
    build_node,
    build_node_status,
    now_rfc3339,
)
from localcluster.nodeagent.pods import PodWorker
from localcluster.nodeagent.runtime import GpuPool, Runtime
from localcluster.procs import live_pids

log = logging.getLogger("nodeagent")
# Lease renewals: well inside the controller-manager's --node-monitor-grace-period (24 s).
LEASE_EVERY_S = 4.0
STATUS_EVERY_S = 30.0


class Agent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.kube = Kube(args.kubeconfig)
        self.nodes: list[NodeSpec] = parse_nodes(args.nodes)
        self.ports = {n.name: args.kubelet_port + i for i, n in enumerate(self.nodes)}
        self.pki = Path(args.pki)
        state = Path(args.state)
        state.mkdir(parents=True, exist_ok=True)
        self.rt = Runtime(
            kube=self.kube,
            state=state,
            repo=Path(args.repo),
            apiserver_port=args.apiserver_port,
            gpus={n.name: GpuPool(n.gpus) for n in self.nodes},
            backoff_s=args.restart_backoff,
        )
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.since = now_rfc3339(datetime.datetime.now(datetime.timezone.utc))
        self.node_uids: dict[str, str] = {}

    # --- nodes ---
    def register(self, node: NodeSpec) -> None:
        body = build_node(node.name, gpus=node.gpus)
        try:
            created = self.kube.create("/api/v1/nodes", body)
        except KubeError as err:
            if err.status != 409:
                raise
            labels: dict[str, str | None] = dict(body["metadata"]["labels"])
            labels.setdefault(GPU_PRESENT_LABEL, None)  # a node that lost its GPUs
            created = self.kube.patch(
                f"/api/v1/nodes/{node.name}", {"metadata": {"labels": labels}}
            )
        self.node_uids[node.name] = created["metadata"]["uid"]
        self.post_status(node)
        self.renew_lease(node)

    def post_status(self, node: NodeSpec) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        status = build_node_status(
            node.name, node.gpus, self.ports[node.name], K8S_VERSION, now, self.since
        )
        self.kube.patch(f"/api/v1/nodes/{node.name}/status", {"status": status})

    def renew_lease(self, node: NodeSpec) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        lease = build_lease(node.name, self.node_uids[node.name], now)
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        try:
            self.kube.patch(f"{path}/{node.name}", {"spec": lease["spec"]})
        except KubeError as err:
            if err.status != 404:
                raise
            self.kube.create(path, lease)

    def heartbeat(self) -> None:
        last_status = time.monotonic()
        while not self.rt.stopping.wait(LEASE_EVERY_S):
            post = time.monotonic() - last_status >= STATUS_EVERY_S
            for node in self.nodes:
                try:
                    self.renew_lease(node)
                    if post:
                        self.post_status(node)
                except KubeError as err:
                    if err.status == 404:  # someone deleted the node: register it again
                        with contextlib.suppress(KubeError, OSError):
                            self.register(node)
                    else:
                        log.warning("node %s: heartbeat failed: %s", node.name, err)
                except Exception as err:  # a dead heartbeat would take every node down
                    log.warning("node %s: heartbeat failed: %s", node.name, err)
            if post:
                last_status = time.monotonic()

    # --- pods ---
    def on_pod(self, pod: dict[str, Any], adopting: bool) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if worker is None or not worker.is_alive():
                if worker is not None:
                    return  # finished with this pod (it was deleted)
                status = pod.get("status") or {}
                started = status.get("phase") == "Running" or any(
                    "running" in (cs.get("state") or {}) or "terminated" in (cs.get("state") or {})
                    for cs in status.get("containerStatuses") or []
                )
                worker = PodWorker(self.rt, pod, adopted=adopting and started)
                self.workers[uid] = worker
                worker.start()
                return
        worker.update(pod)

    def on_delete(self, uid: str) -> None:
        with self.lock:
            worker = self.workers.get(uid)
            if worker is not None and not worker.is_alive():
                del self.workers[uid]  # its pod is gone and so is its worker
                return
        if worker is not None:
            worker.gone()

    def watch_node(self, node: str) -> None:
        selector = f"spec.nodeName={node}"
        adopting = True
        while not self.rt.stopping.is_set():
            try:
                listed = self.kube.get("/api/v1/pods", fieldSelector=selector)
                rv = listed["metadata"]["resourceVersion"]
                seen = set()
                for pod in listed["items"]:
                    seen.add(pod["metadata"]["uid"])
                    self.on_pod(pod, adopting)
                adopting = False
                with self.lock:
                    lost = [u for u, w in self.workers.items() if w.node == node and u not in seen]
                for uid in lost:
                    self.on_delete(uid)
                while not self.rt.stopping.is_set():
                    for event in self.kube.watch("/api/v1/pods", rv, fieldSelector=selector):
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            raise KubeError(obj.get("code", 500), "watch", str(obj))
                        rv = obj["metadata"]["resourceVersion"]
                        if event["type"] == "DELETED":
                            self.on_delete(obj["metadata"]["uid"])
                        elif event["type"] in ("ADDED", "MODIFIED"):
                            self.on_pod(obj, False)
            except Exception as err:  # the watch breaks now and then: list again
                if self.rt.stopping.is_set():
                    return
                if not (isinstance(err, KubeError) and err.status == 410):
                    log.warning("node %s: pod watch restarts: %s", node, err)
                time.sleep(1)

    def resolve_log(
        self, node: str, ns: str, pod: str, container: str, previous: bool
    ) -> tuple[Path, threading.Event | None] | None:
        with self.lock:
            candidates = [
                w
                for w in self.workers.values()
                if (w.node, w.ns, w.pod_name) == (node, ns, pod) and w.dir.exists()
            ]
        folders = [w.dir for w in candidates] or sorted(
            self.rt.state.glob(f"{ns}_{pod}_*"), key=lambda p: p.stat().st_mtime
        )
        if not folders:
            return None
        runs = sorted(
            (folders[-1] / container).glob("*.log"), key=lambda p: int(p.stem), reverse=True
        )
        if previous:
            runs = runs[1:]
        if not runs:
            return None
        sinks = [
            c.sink
            for w in candidates
            for c in w.inits + w.apps
            if c.sink is not None and c.sink.path == runs[0]
        ]
        return runs[0], (sinks[0].done if sinks else None)

    # --- life cycle ---
    def kill_orphans(self) -> None:
        """Process groups an earlier agent started: nobody watches them any more."""
        for pids in self.rt.state.glob("*/pids"):
            for pid in live_pids(pids):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)

    def run(self) -> None:
        self.kill_orphans()
        for node in self.nodes:
            while True:
                try:
                    self.register(node)
                    break
                except (KubeError, OSError) as err:
                    log.info("node %s: waiting for the apiserver: %s", node.name, err)
                    time.sleep(0.5)
            server = LogServer(
                self.ports[node.name],
                self.pki / f"kubelet-{node.name}.crt",
                self.pki / f"kubelet-{node.name}.key",
                self.pki / "ca.crt",
                functools.partial(self.resolve_log, node.name),
            )
            server.serve_in_background()
            threading.Thread(target=self.watch_node, args=(node.name,), daemon=True).start()
            log.info(
                "node %s registered (%d GPUs, port %d)", node.name, node.gpus, self.ports[node.name]
            )
        threading.Thread(target=self.heartbeat, daemon=True).start()
        self.rt.stopping.wait()
        self.shutdown()

    def shutdown(self) -> None:
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.wake.set()
        stoppers = [threading.Thread(target=w.stop, args=(2.0,)) for w in workers]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster.nodeagent")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--nodes", default=DEFAULT_NODES)
    parser.add_argument("--kubelet-port", type=int, default=10250)
    parser.add_argument("--apiserver-port", type=int, default=6443)
    parser.add_argument("--state", required=True, help="folder for pods' files and logs")
    parser.add_argument("--pki", required=True)
    parser.add_argument("--repo", required=True, help="repo root: pods' cwd and .venv")
    parser.add_argument(
        "--restart-backoff",
        type=float,
        default=10.0,
        help="first crash-loop back-off in seconds (doubles up to 300)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        agent = Agent(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: agent.rt.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: agent.rt.stopping.set())
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
