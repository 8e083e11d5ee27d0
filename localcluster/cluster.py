"""`up`, `down` and `status` of the local cluster: start the components in
order, wait until the cluster really serves (apiserver ready, nodes Ready,
the default service account made, S3 answering), write the files users
source, and stop everything again."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from localcluster import components as comp
from localcluster.artifacts import SetupError, ensure_built, ensure_helm
from localcluster.config import Layout, NodeSpec
from localcluster.pki import write_pki
from localcluster.procs import (
    live_pids,
    port_in_use,
    port_owner,
    recorded_names,
    recorded_pid,
    spawn,
    stop_group,
)

# Start order; `down` stops in reverse (the node agent first, so pods end first).
COMPONENTS = (
    "etcd",
    "s3",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "nodeagent",
)
READY_TIMEOUT_S = 120.0


def _secrets(lay: Layout) -> dict[str, str]:
    return json.loads(lay.secrets_file.read_text())


class Api:
    """Just enough admin HTTPS to the apiserver (no client import): whether it is
    ready, and the few calls the add-ons make."""

    def __init__(self, lay: Layout) -> None:
        self.base = f"https://127.0.0.1:{lay.ports.apiserver}"
        self.ctx = ssl.create_default_context(cafile=str(lay.pki / "ca.crt"))
        self.token = _secrets(lay)["admin_token"]

    def get(self, path: str) -> tuple[int, Any]:
        req = urllib.request.Request(
            self.base + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=5) as resp:
                body = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            return err.code, None
        except (OSError, ssl.SSLError):
            return 0, None
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A JSON call; OSError when the apiserver does not answer at all."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, None


def s3_answers(lay: Layout) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{lay.ports.s3}/", timeout=3):
            return True
    except urllib.error.HTTPError:
        return True  # 403 without credentials: it is serving
    except OSError:
        return False


def node_ready(node: dict[str, Any]) -> bool:
    """Whether a Node object's Ready condition is True."""
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )


def _nodes_ready(api: Api, nodes: list[NodeSpec]) -> bool:
    code, body = api.get("/api/v1/nodes")
    if code != 200:
        return False
    ready = {n["metadata"]["name"] for n in body["items"] if node_ready(n)}
    return {n.name for n in nodes} <= ready


def running_components(lay: Layout) -> dict[str, int | None]:
    return {name: recorded_pid(lay.pids, name) for name in COMPONENTS}


def healthy(lay: Layout) -> bool:
    if not lay.up_marker.exists() or None in running_components(lay).values():
        return False
    return Api(lay).get("/readyz")[0] == 200 and s3_answers(lay)


# How long `up` waits for a port still held before it names the holder: longer
# right after it stopped a stale cluster, whose listeners may close late.
PORTS_SETTLE_S = 5.0
STALE_PORTS_SETTLE_S = 30.0


def _check_ports(lay: Layout, nodes: list[NodeSpec], settle_s: float) -> None:
    """Every port the cluster needs is free, waiting up to `settle_s` for those
    still held: the listeners of processes that were just stopped (a stale
    cluster's) can outlive their stop by a moment on a loaded machine."""
    p = lay.ports
    wanted = {
        p.etcd_client: "etcd",
        p.etcd_peer: "etcd peer",
        p.apiserver: "kube-apiserver",
        p.controller_manager: "kube-controller-manager",
        p.scheduler: "kube-scheduler",
        p.s3: "the S3 server",
    }
    wanted.update({p.kubelet_base + i: f"node {n.name}" for i, n in enumerate(nodes)})
    deadline = time.monotonic() + settle_s
    while busy := [port for port in wanted if port_in_use(port)]:
        if time.monotonic() >= deadline:
            port = busy[0]
            owner = port_owner(port) or "an unknown process"
            raise SetupError(
                f"port {port} (needed by {wanted[port]}) is in use by {owner}: stop it, "
                "or run `make cluster-down` if it is an earlier cluster",
                code=4,
            )
        time.sleep(0.2)


def _check_host() -> None:
    """Pods run in private mount namespaces (their volumes and token appear only to them)."""
    if shutil.which("unshare") is None:
        raise SetupError("the `unshare` command is missing: install util-linux, then run again")
    if os.geteuid() != 0:
        raise SetupError(
            "the node agent needs root to give pods private mount namespaces: "
            "run `make cluster-up` as root (for example in a CI container)"
        )


def _needs_sidecar(folder: Path) -> bool:
    """True when the filesystem refuses user xattrs (the S3 backend's metadata)."""
    probe = folder / ".xattr-probe"
    probe.touch()
    try:
        os.setxattr(probe, "user.kubetune", b"1")
        return False
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EPERM, errno.EOPNOTSUPP):
            return True
        raise
    finally:
        probe.unlink()


def _wait(what: str, check: Callable[[], bool], lay: Layout, deadline: float) -> None:
    while not check():
        dead = [n for n, pid in running_components(lay).items() if pid is None]
        started = set(recorded_names(lay.pids))
        crashed = [n for n in dead if n in started]
        if crashed:
            raise SetupError(
                f"{crashed[0]} exited while waiting for {what}: "
                f"see {lay.logs / (crashed[0] + '.log')}"
            )
        if time.monotonic() > deadline:
            raise SetupError(f"timed out waiting for {what}: see the logs in {lay.logs}")
        time.sleep(0.2)


def _write_user_files(lay: Layout) -> None:
    sec = _secrets(lay)
    lay.bin.mkdir(parents=True, exist_ok=True)
    kubectl = lay.bin / "kubectl"
    kubectl.unlink(missing_ok=True)
    kubectl.symlink_to(lay.k8s("kubectl"))
    helm = ensure_helm(lay)
    if helm:
        (lay.bin / "helm").unlink(missing_ok=True)
        (lay.bin / "helm").symlink_to(helm)
    lay.env_file.write_text(
        "# Source this file to use the local cluster: . .cluster/env\n"
        f"export KUBECONFIG={lay.kubeconfig}\n"
        f"export AWS_ENDPOINT_URL=http://127.0.0.1:{lay.ports.s3}\n"
        f"export AWS_ACCESS_KEY_ID={sec['s3_access_key']}\n"
        f"export AWS_SECRET_ACCESS_KEY={sec['s3_secret_key']}\n"
        "export AWS_DEFAULT_REGION=us-east-1\n"
        f'export PATH="{lay.bin}:$PATH"\n'
    )


@contextlib.contextmanager
def _exclusive(lay: Layout) -> Iterator[None]:
    """One `up` or `down` at a time per cluster (two test sessions may start together)."""
    digest = hashlib.sha1(str(lay.state).encode()).hexdigest()[:12]
    lock = lay.cache / "locks" / f"cluster-{digest}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("another `up` or `down` of this cluster is running: waiting for it", flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def up(lay: Layout, nodes: list[NodeSpec]) -> int:
    with _exclusive(lay):
        return _up(lay, nodes)


def _up(lay: Layout, nodes: list[NodeSpec]) -> int:
    started = time.monotonic()
    if lay.state.exists():
        if healthy(lay):
            took = time.monotonic() - started
            print(f"local cluster already up and healthy ({took:.1f}s): . {lay.env_file}")
            return 0
        print(
            "found a stale .cluster (an earlier cluster stopped or was killed): "
            "cleaning it up and starting again"
        )
        _down(lay, quiet=True)
        settle_s = STALE_PORTS_SETTLE_S
    else:
        settle_s = PORTS_SETTLE_S
    _check_host()
    ensure_built(lay)
    _check_ports(lay, nodes, settle_s)
    build_done = time.monotonic()
    for folder in (lay.state, lay.logs, lay.pids, lay.etcd_data, lay.s3_data, lay.pods):
        folder.mkdir(parents=True, exist_ok=True)
    lay.etcd_data.chmod(0o700)
    write_pki(lay.pki, [n.name for n in nodes])
    sec = {
        "admin_token": secrets.token_hex(24),
        "s3_access_key": "kubetune",
        "s3_secret_key": secrets.token_hex(16),
    }
    lay.secrets_file.write_text(json.dumps(sec))
    lay.secrets_file.chmod(0o600)
    (lay.state / "tokens.csv").write_text(comp.build_token_file(sec["admin_token"]))
    (lay.state / "tokens.csv").chmod(0o600)
    server = f"https://127.0.0.1:{lay.ports.apiserver}"
    lay.kubeconfig.write_text(comp.build_kubeconfig(server, lay.pki / "ca.crt", sec["admin_token"]))
    lay.kubeconfig.chmod(0o600)
    sidecar = _needs_sidecar(lay.s3_data)
    if sidecar:
        lay.s3_sidecar.mkdir(exist_ok=True)

    def start(name: str, argv: list[str]) -> None:
        spawn(name, argv, logs=lay.logs, pids=lay.pids, cwd=lay.repo)

    try:
        start("etcd", comp.etcd_argv(lay))
        start("s3", comp.s3_argv(lay, sec["s3_access_key"], sec["s3_secret_key"], sidecar))
        start("kube-apiserver", comp.apiserver_argv(lay))
        api = Api(lay)
        deadline = time.monotonic() + READY_TIMEOUT_S
        _wait("the apiserver's /readyz", lambda: api.get("/readyz")[0] == 200, lay, deadline)
        print(f"apiserver ready ({time.monotonic() - build_done:.1f}s)", flush=True)
        start("kube-controller-manager", comp.controller_manager_argv(lay))
        start("kube-scheduler", comp.scheduler_argv(lay))
        spawn_nodeagent(lay, "nodeagent", comp.nodeagent_argv(lay, nodes))
        _wait("the nodes to be Ready", lambda: _nodes_ready(api, nodes), lay, deadline)
        _wait(
            "the default service account",
            lambda: (
                api.get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200
                and api.get("/api/v1/namespaces/default/configmaps/kube-root-ca.crt")[0] == 200
            ),
            lay,
            deadline,
        )
        _wait("the S3 server", lambda: s3_answers(lay), lay, deadline)
        _write_user_files(lay)
    except BaseException:
        _stop_all(lay)
        raise
    lay.up_marker.write_text(f"{time.time()}\n")
    took = time.monotonic() - started
    print(
        f"local cluster up in {took:.1f}s (start {time.monotonic() - build_done:.1f}s): "
        f"{len(nodes)} nodes ({', '.join(f'{n.name}={n.gpus} GPU' for n in nodes)}), "
        f"S3 at http://127.0.0.1:{lay.ports.s3}\n"
        f"  use it: . {lay.env_file}"
    )
    return 0


def spawn_nodeagent(lay: Layout, name: str, argv: list[str]) -> int:
    """A node agent process: it imports localcluster from the repo, and no KUBE*
    variable of ours reaches it (it is given its kubeconfig)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["PYTHONPATH"] = str(lay.repo)
    return spawn(name, argv, logs=lay.logs, pids=lay.pids, cwd=lay.repo, env=env)


def _stop_all(lay: Layout) -> None:
    # Extra node agents a test started (localcluster/faults.py) first, then the
    # components in reverse order.
    extras = [n for n in recorded_names(lay.pids) if n not in COMPONENTS]
    for name in [*extras, *reversed(COMPONENTS)]:
        pid = recorded_pid(lay.pids, name)
        if pid is not None:
            stop_group(pid, grace_s=10 if name.startswith("nodeagent") else 5)
    # Pod processes of an agent that died before it could stop them.
    for pids in lay.state.glob("pods*/*/pids") if lay.state.is_dir() else []:
        for pid in live_pids(pids):
            with contextlib.suppress(OSError):
                stop_group(pid, grace_s=2)


def _unmount_under(folder: Path) -> None:
    prefix = str(folder.resolve())
    with contextlib.suppress(OSError):
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        for target in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)


def down(lay: Layout, quiet: bool = False) -> int:
    with _exclusive(lay):
        return _down(lay, quiet)


def _down(lay: Layout, quiet: bool) -> int:
    if not lay.state.exists():
        if not quiet:
            print("no local cluster here (no .cluster): nothing to stop")
        return 0
    _stop_all(lay)
    _unmount_under(lay.state)
    shutil.rmtree(lay.state, ignore_errors=True)
    if not quiet:
        print("local cluster stopped and .cluster removed")
    return 0


def status(lay: Layout) -> int:
    if not lay.state.exists():
        print("local cluster: not running (no .cluster); start it with `make cluster-up`")
        return 1
    procs = running_components(lay)
    for name, pid in procs.items():
        print(f"  {name:<24} {'running, pid ' + str(pid) if pid else 'NOT RUNNING'}")
    ok = healthy(lay)
    if lay.secrets_file.exists() and procs["kube-apiserver"]:
        code, body = Api(lay).get("/api/v1/nodes")
        if code == 200:
            for node in body["items"]:
                ready = node_ready(node)
                gpus = node["status"].get("allocatable", {}).get("nvidia.com/gpu", "0")
                print(
                    f"  node {node['metadata']['name']:<19} "
                    f"{'Ready' if ready else 'NotReady'}, {gpus} GPU"
                )
    print(f"local cluster: {'healthy' if ok else 'NOT healthy'} ({lay.state})")
    return 0 if ok else 1
