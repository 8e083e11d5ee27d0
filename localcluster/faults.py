"""Faults the chaos tests inject into the running local cluster: a component
(the S3 server, kube-apiserver, etcd ...) killed and started again with the
very command line `up` gave it, and a node served by an agent of its own that
can be lost as a machine is lost (agent and pod processes killed at once)."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from localcluster import components as comp
from localcluster.cluster import Api, s3_answers, spawn_nodeagent
from localcluster.config import Layout, NodeSpec
from localcluster.pki import load_ca, write_kubelet_pair
from localcluster.procs import live_pids, recorded_pid, spawn, stop_group

RESTARTABLE = ("etcd", "s3", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


class FaultError(Exception):
    """A fault could not be injected or undone; the message says which and why."""


def component_argv(lay: Layout, name: str) -> list[str]:
    """The command line `up` starts component `name` with (components.py)."""
    if name == "etcd":
        return comp.etcd_argv(lay)
    if name == "s3":
        sec = json.loads(lay.secrets_file.read_text())
        sidecar = lay.s3_sidecar.is_dir()
        return comp.s3_argv(lay, sec["s3_access_key"], sec["s3_secret_key"], sidecar)
    if name == "kube-apiserver":
        return comp.apiserver_argv(lay)
    if name == "kube-controller-manager":
        return comp.controller_manager_argv(lay)
    if name == "kube-scheduler":
        return comp.scheduler_argv(lay)
    raise FaultError(f"cannot restart {name!r}: choose one of {', '.join(RESTARTABLE)}")


def component_running(lay: Layout, name: str) -> bool:
    return recorded_pid(lay.pids, name) is not None


def kill_component(lay: Layout, name: str) -> None:
    """SIGKILLs component `name` (a crash: no goodbye to its clients)."""
    component_argv(lay, name)  # refuses unknown names before anything is killed
    pid = recorded_pid(lay.pids, name)
    if pid is None:
        raise FaultError(f"{name} is not running: start the cluster with `make cluster-up`")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    stop_group(pid, grace_s=0)  # waits until the group is gone


def start_component(lay: Layout, name: str, timeout_s: float = 60.0) -> float:
    """Starts component `name` again and waits until it serves; returns the seconds it took."""
    if recorded_pid(lay.pids, name) is not None:
        raise FaultError(f"{name} is already running")
    t0 = time.monotonic()
    spawn(name, component_argv(lay, name), logs=lay.logs, pids=lay.pids, cwd=lay.repo)
    ready: dict[str, Callable[[], bool]] = {
        # etcd serves once the apiserver, which reconnects to it, is ready again.
        "etcd": lambda: _port_answers(lay.ports.etcd_client) and Api(lay).get("/readyz")[0] == 200,
        "s3": lambda: s3_answers(lay),
        "kube-apiserver": lambda: Api(lay).get("/readyz")[0] == 200,
        "kube-controller-manager": lambda: _port_answers(lay.ports.controller_manager),
        "kube-scheduler": lambda: _port_answers(lay.ports.scheduler),
    }
    deadline = t0 + timeout_s
    while not ready[name]():
        if recorded_pid(lay.pids, name) is None:
            raise FaultError(f"{name} exited while starting again: see {lay.logs / name}.log")
        if time.monotonic() > deadline:
            raise FaultError(f"{name} did not serve within {timeout_s:.0f}s of starting again")
        time.sleep(0.1)
    return time.monotonic() - t0


def stale_settings(lay: Layout) -> list[str]:
    """Flags of components.py that the running control plane was not started
    with (a cluster started before they were added): node-loss tests need them."""
    missing: list[str] = []
    for name, argv in (
        ("kube-controller-manager", comp.controller_manager_argv(lay)),
        ("kube-apiserver", comp.apiserver_argv(lay)),
    ):
        pid = recorded_pid(lay.pids, name)
        if pid is None:
            missing.append(f"{name} (not running)")
            continue
        running = set(Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0"))
        missing += [f"{name} {a}" for a in argv if a.startswith("--") and a not in running]
    return missing


def _port_answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


class LoseableNode:
    """A node served by a node agent of its own, beside the cluster's: losing it
    SIGKILLs the agent and every process of its pods, as when a machine dies.
    The control plane then sees its lease stop, marks it NotReady and evicts
    its pods, as it would for a real node."""

    def __init__(self, lay: Layout, node: NodeSpec, index: int = 0) -> None:
        self.lay = lay
        self.node = node
        # Above the cluster's own agents' ports (kubelet_base + node index).
        self.port = lay.ports.kubelet_base + 50 + index
        self.proc_name = f"nodeagent-{node.name}"
        # Its pods' folders apart from the cluster agent's: `lose` kills exactly
        # these, and `down` finds strays under .cluster/pods-*.
        self.state = lay.state / f"pods-{node.name}"

    def start(self) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        write_kubelet_pair(self.lay.pki, load_ca(self.lay.pki), now, self.node.name)
        argv = comp.nodeagent_argv(self.lay, [self.node])
        argv = [a for a in argv if not a.startswith(("--kubelet-port=", "--state="))]
        argv += [f"--kubelet-port={self.port}", f"--state={self.state}"]
        spawn_nodeagent(self.lay, self.proc_name, argv)

    def running(self) -> bool:
        return recorded_pid(self.lay.pids, self.proc_name) is not None

    def lose(self) -> int:
        """SIGKILLs the agent and its pods' processes at once; returns how many pod
        processes died with it."""
        pid = recorded_pid(self.lay.pids, self.proc_name)
        if pid is None:
            raise FaultError(f"the agent of node {self.node.name} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        killed = 0
        for pids in self.state.glob("*/pids"):
            for pod_pid in live_pids(pids):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pod_pid, signal.SIGKILL)
                    killed += 1
        stop_group(pid, grace_s=0)
        return killed
