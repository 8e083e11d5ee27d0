"""Acceptance of `python -m localcluster up|status|down` itself, on a second
cluster beside the shared one (its own state folder and ports), so the shared
cluster keeps serving: warm start time and disk use (printed), idempotence,
clear refusals, recovery from a killed run, and a restarted node agent."""

# The typed client takes models and marks every field Optional; these tests pass
# manifests as dicts (the client validates them) and read fields the API always sets.
# mypy: disable-error-code="arg-type,union-attr,index"

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from operator_fixtures import report_figure

from localcluster import components
from localcluster.config import Layout, Ports, parse_nodes
from localcluster.procs import recorded_pid, spawn
from localcluster.testing import python_pod, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
OFFSET = 1000
NODES = "up-cpu=0,up-gpu=1"
WARM_UP_TARGET_S = 30.0


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Layout]]:
    state = tmp_path_factory.mktemp("second") / "cluster"
    env = {
        **os.environ,
        "KUBETUNE_STATE_DIR": str(state),
        "KUBETUNE_PORT_OFFSET": str(OFFSET),
        "KUBETUNE_NODES": NODES,
    }
    lay = Layout(
        repo=REPO, cache=Layout.discover().cache, state=state, ports=Ports().shifted(OFFSET)
    )
    yield env, lay
    _localcluster(env, "down")


def _localcluster(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localcluster", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_a_port_in_use_is_named(second: tuple[dict[str, str], Layout]) -> None:
    env, lay = second
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", lay.ports.s3))
        squatter.listen()

        proc = _localcluster(env, "up")

    assert proc.returncode == 4, proc.stdout + proc.stderr
    line = proc.stderr.strip()
    assert f"port {lay.ports.s3}" in line and f"pid {os.getpid()}" in line
    assert len(line.splitlines()) == 1


def test_warm_up_time_and_disk_use(second: tuple[dict[str, str], Layout]) -> None:
    env, lay = second
    begin = time.monotonic()
    proc = _localcluster(env, "up")
    took = time.monotonic() - begin
    assert proc.returncode == 0, proc.stdout + proc.stderr

    again = time.monotonic()
    repeat = _localcluster(env, "up")
    took_again = time.monotonic() - again

    cache_mb, state_mb = _du(lay.cache) / 1e6, _du(lay.state) / 1e6
    report_figure(
        f"warm `up`: {took:.1f}s (target {WARM_UP_TARGET_S:.0f}s); repeated `up` on a "
        f"healthy cluster: {took_again:.1f}s; disk: build cache {cache_mb:.0f} MB, "
        f"fresh cluster state {state_mb:.1f} MB"
    )
    assert took < WARM_UP_TARGET_S
    assert repeat.returncode == 0 and "already up and healthy" in repeat.stdout
    assert took_again < 5
    status = _localcluster(env, "status")
    assert status.returncode == 0 and "healthy" in status.stdout
    assert (lay.state / "kubeconfig").exists() and (lay.state / "env").exists()
    assert os.readlink(lay.bin / "kubectl") == str(lay.k8s("kubectl"))


def test_restarted_node_agent_fails_the_pods_it_lost(
    second: tuple[dict[str, str], Layout],
) -> None:
    _, lay = second
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(lay.kubeconfig)))
    pod = python_pod("orphan", "import time; time.sleep(600)")
    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "up-cpu"}
    core.create_namespaced_pod("default", pod)

    def running() -> Any:
        found = core.read_namespaced_pod("orphan", "default")
        return found if found.status.phase == "Running" else None

    first = wait_for("the pod to run", running, timeout=60)
    process = int(first.status.container_statuses[0].container_id.split("://")[1])
    agent = recorded_pid(lay.pids, "nodeagent")
    assert agent is not None
    os.kill(agent, signal.SIGKILL)
    spawn(
        "nodeagent",
        components.nodeagent_argv(lay, parse_nodes(NODES)),
        logs=lay.logs,
        pids=lay.pids,
        cwd=REPO,
    )

    def failed() -> Any:
        found = core.read_namespaced_pod("orphan", "default")
        return found if found.status.phase == "Failed" else None

    ended = wait_for("the orphaned pod to be marked Failed", failed, timeout=60)

    assert ended.status.reason == "NodeAgentRestarted"
    assert ended.status.container_statuses[0].state.terminated.reason == "NodeAgentRestarted"
    wait_for("the lost process to be killed", lambda: not _alive(process), timeout=10)


def test_up_after_a_killed_run_cleans_up_and_starts(
    second: tuple[dict[str, str], Layout],
) -> None:
    env, lay = second
    etcd = recorded_pid(lay.pids, "etcd")
    assert etcd is not None
    os.kill(etcd, signal.SIGKILL)
    wait_for("etcd to die", lambda: recorded_pid(lay.pids, "etcd") is None, timeout=10)

    proc = _localcluster(env, "up")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "stale" in proc.stdout.splitlines()[0]
    assert recorded_pid(lay.pids, "etcd") not in (None, etcd)


def test_down_stops_everything_and_removes_the_state(
    second: tuple[dict[str, str], Layout],
) -> None:
    env, lay = second
    pids = [recorded_pid(lay.pids, name) for name in ("etcd", "kube-apiserver", "nodeagent")]
    assert None not in pids

    proc = _localcluster(env, "down")

    assert proc.returncode == 0, proc.stderr
    assert not lay.state.exists()
    assert not [p for p in pids if p is not None and _alive(p)]
    assert _localcluster(env, "status").returncode == 1


def test_missing_go_toolchain_is_one_clear_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KUBETUNE_CACHE": str(tmp_path / "empty-cache"),
        "KUBETUNE_STATE_DIR": str(tmp_path / "cluster"),
        "KUBETUNE_PORT_OFFSET": str(OFFSET),
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",  # without the Go toolchain
    }
    if subprocess.run(["which", "go"], env=env, capture_output=True).returncode == 0:
        pytest.skip("go is installed in a system folder here")

    proc = _localcluster(env, "up")

    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1 and "Go toolchain is missing" in proc.stderr
    assert not (tmp_path / "cluster").exists()
