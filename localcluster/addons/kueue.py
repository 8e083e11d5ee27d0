"""Kueue on the local cluster: the real Kueue controller manager
(sigs.k8s.io/kueue, built from source by `build.sh kueue`) as a host process,
the way kwok runs (supervise.py), so TrainableJobs can be queued, admitted
and preempted.

`python -m localcluster kueue up` builds Kueue if it is missing, applies its
CRDs (from the Go module's config/components/crd/bases, server-side: the
Workload CRD alone is 1.4 MB, too big for client-side apply), writes a serving
certificate signed by the cluster CA and a Kueue Configuration into
.cluster/kueue/, starts Kueue with the admin kubeconfig (so it needs no RBAC)
and waits until its readiness probe answers. It is idempotent: a Kueue already
running is left alone. `kueue down` stops it (the CRDs and Kueue's objects
stay); `kueue status` says whether it runs and answers. `make cluster-down`
ends it too (it dies with the apiserver).

What differs from Kueue's own Deployment:

- Its webhooks are served (on 127.0.0.1, our certificate) but not registered
  with the apiserver: no Mutating/ValidatingWebhookConfiguration, no
  conversion webhook on the CRDs. Kueue's objects are therefore neither
  defaulted nor validated by Kueue on write (the CRD schemas' own defaults
  and checks still apply), and only the storage version v1beta2 should be
  used. Nothing here needs them; Kueue's readiness only waits for the webhook
  server to listen.
- internalCertManagement is off (it would wait for webhook configurations and
  conversion webhooks that do not exist), leader election is off (one
  replica), the visibility API server is off (feature gate VisibilityOnDemand:
  it would need an APIService and its own certificate).
- Kueue v0.17.0 reads its metrics certificate from a fixed path,
  /etc/kueue/metrics/certs/tls.{crt,key}, whenever internalCertManagement is
  off (the Deployment mounts a Secret there). Kueue runs in a private mount
  namespace (`unshare --mount`, like the node agent's pods) in which our
  certificate folder is bind-mounted on that path; the host sees only the
  empty mount point.
- Integrations: batch/job only (Kueue's default; it manages only Jobs that
  name a queue), and TrainableJob.v1alpha1.kubetune.io as an external
  framework: Kueue accepts Workloads owned by TrainableJobs, which our
  operator creates itself. Kueue starts whether or not the TrainableJob CRD
  is installed.

Tests use `ensure_kueue(lay)` and `restart_kueue(lay)`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from localcluster.addons import supervise
from localcluster.artifacts import SetupError, build_tool
from localcluster.config import Layout
from localcluster.pki import build_leaf, load_ca, write_pair
from localcluster.procs import port_in_use, port_owner, recorded_pid

KUEUE_VERSION = os.environ.get("KUEUE_VERSION", "v0.17.0")
MODULE = "sigs.k8s.io/kueue"
NAME = "kueue"  # .cluster/logs/kueue.log, .cluster/pids/kueue.pid
NAMESPACE = "kueue-system"  # Kueue's own; it looks for MultiKueue secrets there
FRAMEWORKS = ("batch/job",)
EXTERNAL_FRAMEWORKS = ("TrainableJob.v1alpha1.kubetune.io",)
FEATURE_GATES = {"VisibilityOnDemand": False}
# Where cmd/kueue/main.go looks for the metrics certificate without internal cert management.
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")
CRD_SUBDIR = Path("config/components/crd/bases")
FIELD_MANAGER = "kubetune-localcluster"
READY_TIMEOUT_S = 120.0
CRD_TIMEOUT_S = 60.0


class KueueError(RuntimeError):
    """Kueue could not be started; the text says why and where to look."""


def kueue_bin(lay: Layout) -> Path:
    return lay.cache / f"kueue-{KUEUE_VERSION}" / "bin" / "kueue"


def state_dir(lay: Layout) -> Path:
    return lay.state / "kueue"


def cert_dir(lay: Layout) -> Path:
    """tls.crt and tls.key: the webhook's certDir, bind-mounted as the metrics certs too."""
    return state_dir(lay) / "certs"


def config_file(lay: Layout) -> Path:
    return state_dir(lay) / "config.yaml"


def log_file(lay: Layout) -> Path:
    return lay.logs / f"{NAME}.log"


def configuration(lay: Layout) -> dict[str, Any]:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2) for a host process."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "manageJobsWithoutQueueName": False,
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {
            "host": "127.0.0.1",
            "port": lay.ports.kueue_webhook,
            "certDir": str(cert_dir(lay)),
        },
        "health": {"healthProbeBindAddress": f"127.0.0.1:{lay.ports.kueue_health}"},
        "metrics": {"bindAddress": f"127.0.0.1:{lay.ports.kueue_metrics}"},
        "integrations": {
            "frameworks": list(FRAMEWORKS),
            "externalFrameworks": list(EXTERNAL_FRAMEWORKS),
        },
        "featureGates": dict(FEATURE_GATES),
    }


def render_configuration(lay: Layout) -> str:
    return yaml.safe_dump(configuration(lay), sort_keys=False)


def kueue_argv(lay: Layout, binary: Path) -> list[str]:
    return [
        str(binary),
        f"--config={config_file(lay)}",
        f"--kubeconfig={lay.kubeconfig}",
        "--zap-log-level=info",
    ]


def in_mount_namespace(argv: list[str], certs: Path) -> list[str]:
    """`argv` in a private mount namespace where `certs` is seen at METRICS_CERT_DIR."""
    script = f'mount --bind "$1" {METRICS_CERT_DIR} && shift && exec "$@"'
    namespace = ["unshare", "--mount", "--propagation", "private"]
    return [*namespace, "bash", "-c", script, "kueue", str(certs), *argv]


def crd_name(path: Path) -> str:
    """kueue.x-k8s.io_workloads.yaml -> workloads.kueue.x-k8s.io (controller-gen's naming)."""
    group, _, plural = path.stem.partition("_")
    return f"{plural}.{group}"


def go_env() -> dict[str, str]:
    """build.sh's Go settings: the local toolchain, the module cache, no checksum database."""
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", GOFLAGS="-buildvcs=false", GOSUMDB="off")
    return env


def module_dir() -> Path:
    """Kueue's module source (its CRDs), from the Go module cache (downloaded if missing)."""
    if shutil.which("go") is None:
        raise KueueError("the Go toolchain is missing: Kueue's CRDs come from its Go module")
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"{MODULE}@{KUEUE_VERSION}"],
        capture_output=True,
        text=True,
        env=go_env(),
        check=False,
    )
    try:
        info = json.loads(result.stdout)
    except ValueError:
        info = {}
    if result.returncode != 0 or not info.get("Dir"):
        why = info.get("Error") or result.stderr.strip() or f"exit {result.returncode}"
        raise KueueError(f"`go mod download {MODULE}@{KUEUE_VERSION}` failed: {why}")
    return Path(info["Dir"])


def crd_files(module: Path) -> list[Path]:
    files = sorted((module / CRD_SUBDIR).glob("*.yaml"))
    if not files:
        raise KueueError(f"no CRDs in {module / CRD_SUBDIR}")
    return files


def ensure_built(lay: Layout) -> Path:
    try:
        return build_tool(lay, "kueue", kueue_bin(lay), f"Kueue {KUEUE_VERSION}", "1.25", 4)
    except SetupError as err:
        raise KueueError(str(err)) from None


def _api(lay: Layout) -> Any:
    from localcluster.cluster import Api

    return Api(lay)


def apply_crds(lay: Layout, files: list[Path]) -> None:
    """Server-side apply (idempotent; takes over fields another manager set), then
    waits until every CRD is Established."""
    cmd = [str(lay.k8s("kubectl")), f"--kubeconfig={lay.kubeconfig}", "apply"]
    cmd += ["--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}"]
    for path in files:
        cmd += ["-f", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KueueError(f"applying Kueue's CRDs failed: {result.stderr.strip()}")
    api = _api(lay)
    pending = {crd_name(p) for p in files}
    deadline = time.monotonic() + CRD_TIMEOUT_S
    while pending:
        for name in sorted(pending):
            code, body = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            status = (body or {}).get("status") or {} if code == 200 else {}
            conditions = status.get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                pending.discard(name)
        if pending and time.monotonic() > deadline:
            raise KueueError(f"Kueue's CRDs not Established after {CRD_TIMEOUT_S:.0f}s: {pending}")
        if pending:
            time.sleep(0.3)


def write_certificate(lay: Layout) -> None:
    """A serving certificate for 127.0.0.1 signed by the cluster CA (once per cluster)."""
    folder = cert_dir(lay)
    if (folder / "tls.crt").is_file() and (folder / "tls.key").is_file():
        return
    now = datetime.datetime.now(datetime.timezone.utc)
    issued = build_leaf(
        load_ca(lay.pki),
        now,
        "kueue-webhook-service",
        dns=("localhost", f"kueue-webhook-service.{NAMESPACE}.svc"),
        ips=("127.0.0.1",),
        server=True,
    )
    write_pair(folder, issued)


def ready(lay: Layout) -> bool:
    """Kueue's readiness probe (its webhook server listens, its caches are filled)."""
    url = f"http://127.0.0.1:{lay.ports.kueue_health}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def running(lay: Layout) -> int | None:
    return recorded_pid(lay.pids, NAME)


def _check_ports(lay: Layout) -> None:
    p = lay.ports
    wanted = {p.kueue_webhook: "webhooks", p.kueue_health: "health", p.kueue_metrics: "metrics"}
    for port, what in wanted.items():
        if port_in_use(port):
            owner = port_owner(port) or "an unknown process"
            raise KueueError(
                f"port {port} (Kueue's {what}) is in use by {owner}: stop it, "
                "or `python -m localcluster kueue down` if it is an earlier Kueue"
            )


def _log_tail(lay: Layout, lines: int = 15) -> str:
    try:
        text = log_file(lay).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def start(lay: Layout) -> float:
    """Applies the CRDs and starts Kueue unless it runs; waits until it is ready.
    Returns the seconds it took. Raises KueueError."""
    from localcluster.cluster import healthy

    started = time.monotonic()
    if not healthy(lay):
        raise KueueError("the local cluster is not up: run `make cluster-up` first")
    binary = ensure_built(lay)
    if running(lay) is None:
        _check_ports(lay)
        apply_crds(lay, crd_files(module_dir()))
        write_certificate(lay)
        config_file(lay).write_text(render_configuration(lay))
        METRICS_CERT_DIR.mkdir(parents=True, exist_ok=True)  # the mount point only
        env = dict(os.environ, KUBECONFIG=str(lay.kubeconfig))
        argv = in_mount_namespace(kueue_argv(lay, binary), cert_dir(lay))
        supervise.start(lay, NAME, argv, env=env)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready(lay):
        if running(lay) is None:
            raise KueueError(f"Kueue exited: see {log_file(lay)}\n{_log_tail(lay)}")
        if time.monotonic() > deadline:
            raise KueueError(
                f"Kueue not ready after {READY_TIMEOUT_S:.0f}s: see {log_file(lay)}\n"
                f"{_log_tail(lay)}"
            )
        time.sleep(0.3)
    return time.monotonic() - started


def stop(lay: Layout) -> bool:
    """Stops Kueue; True if it was running."""
    return supervise.stop(lay, NAME, grace_s=10)


# --- for tests -----------------------------------------------------------------


def ensure_kueue(lay: Layout) -> None:
    """Kueue running and ready on the cluster of `lay` (started if need be)."""
    if running(lay) is not None and ready(lay):
        return
    start(lay)


def restart_kueue(lay: Layout) -> None:
    """Stops Kueue and starts it again (its state comes back from the apiserver)."""
    stop(lay)
    start(lay)


# --- command line --------------------------------------------------------------


def up(lay: Layout) -> int:
    was = running(lay)
    try:
        took = start(lay)
    except KueueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    what = "already running" if was is not None else f"up in {took:.1f}s"
    print(
        f"Kueue {KUEUE_VERSION} {what} (pid {running(lay)}, log {log_file(lay)}, "
        f"config {config_file(lay)})",
        flush=True,
    )
    return 0


def down(lay: Layout) -> int:
    print("Kueue stopped" if stop(lay) else "Kueue was not running")
    return 0


def status(lay: Layout) -> int:
    pid = running(lay)
    if pid is None:
        print("kueue: not running")
        return 1
    print(f"kueue: running, pid {pid}; {'ready' if ready(lay) else 'NOT ready'}")
    return 0 if ready(lay) else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localcluster kueue",
        description="The real Kueue as a host process on the local cluster.",
    )
    parser.add_argument("action", choices=["up", "down", "status", "config"])
    args = parser.parse_args(argv)
    lay = Layout.discover()
    if args.action == "config":
        print(render_configuration(lay), end="")
        return 0
    if args.action == "up":
        return up(lay)
    if args.action == "down":
        return down(lay)
    return status(lay)
