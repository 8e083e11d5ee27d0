"""Fixtures for the operator's end-to-end tests: the CRD installed, the operator
running as a process (killable and restartable), S3 bucket and credentials,
and small helpers to create jobs and wait on their status."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.storage import open_storage
from kubetune.storage.runfolder import RunStore
from localcluster.config import Layout
from localcluster.testing import Cluster, read_env_file

REPO = Path(__file__).resolve().parents[2]
# The cluster the tests run on: .cluster, or KUBETUNE_STATE_DIR's.
STATE = Layout.discover().state
LOGS = STATE / "logs"
# Figures the tests measure (latencies, timings), printed in pytest's summary:
# a file per process, since the parallel phase's workers measure them.
FIGURES = LOGS / "e2e-figures"


def report_figure(line: str) -> None:
    print(line)
    FIGURES.mkdir(parents=True, exist_ok=True)
    with (FIGURES / f"{WORKER or 'serial'}.txt").open("a") as fh:
        fh.write(line + "\n")


def reported_figures() -> list[str]:
    return [
        line
        for path in sorted(FIGURES.glob("*.txt"))
        for line in path.read_text().splitlines()
        if line
    ]


def operator_log(name: str) -> Path:
    """The log of one of this process's operators (each worker has its own)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    return LOGS / f"{name}{'-' + WORKER if WORKER else ''}.log"


BUCKET = "kubetune-e2e"
SECRET = "s3-credentials"
# Namespaces the chart-installed operator owns; the test operator process skips them.
HELM_NAMESPACE_PREFIX = "kubetune-helm-"
# The parallel phase runs the suite in pytest-xdist workers (gw0, gw1 ...): each
# names its namespaces after itself and has operators of its own, serving
# only those, on ports of its own. The serial phase (no worker) keeps the
# plain names and the base ports.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
NAMESPACE_PREFIX = f"{WORKER}-" if WORKER else ""
# The test operator's endpoints (pods are local processes: 127.0.0.1 reaches it),
# away from the defaults a demo or benchmark operator uses; moved with the
# cluster's ports (KUBETUNE_PORT_OFFSET) so a second cluster's tests can run beside.
PORT_OFFSET = int(os.environ.get("KUBETUNE_PORT_OFFSET") or "0")
PORT_BASE = 18470 + PORT_OFFSET + (20 * (int(WORKER[2:]) + 1) if WORKER[2:].isdigit() else 0)
PROGRESS_PORT = PORT_BASE
METRICS_PORT = PORT_BASE + 1
# The Kueue tests' namespaces (named after the tests, test_kueue_*) have an
# operator of their own, started with --kueue (tests/e2e/test_kueue.py).
KUEUE_NAMESPACE_PREFIX = f"{NAMESPACE_PREFIX}test-kueue-"
KUEUE_PORTS = (PORT_BASE + 10, PORT_BASE + 11)
# What the test operator serves: this worker's namespaces but the Kueue
# tests'; in the serial phase, everything no other operator owns.
TEST_OPERATOR_NAMESPACES = (
    f"{NAMESPACE_PREFIX}*,!{KUEUE_NAMESPACE_PREFIX}*"
    if WORKER
    else f"!{HELM_NAMESPACE_PREFIX}*,!bench-*,!{KUEUE_NAMESPACE_PREFIX}*"
)


def served_by_test_operator(namespace: str) -> bool:
    if namespace.startswith((HELM_NAMESPACE_PREFIX, "bench-", KUEUE_NAMESPACE_PREFIX)):
        return False
    return namespace.startswith(NAMESPACE_PREFIX)


def cluster_env() -> dict[str, str]:
    """The variables `.cluster/env` exports (S3 endpoint and credentials, KUBECONFIG)."""
    return read_env_file(STATE / "env")


def kubectl(
    *args: str, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=str(STATE / "kubeconfig"))
    proc = subprocess.run(
        [str(STATE / "bin" / "kubectl"), *args],
        capture_output=True,
        text=True,
        env=env,
        input=input,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def wait_condition(namespace: str, name: str, condition: str, timeout_s: int = 120) -> None:
    """`kubectl wait` for a TrainableJob condition (Complete, Failed, Finished ...)."""
    kubectl(
        "-n", namespace, "wait", f"--for=condition={condition}", f"tj/{name}",
        f"--timeout={timeout_s}s",
    )  # fmt: skip


def set_suspend(namespace: str, name: str, suspend: bool) -> None:
    patch = json.dumps({"spec": {"suspend": suspend}})
    kubectl("-n", namespace, "patch", "tj", name, "--type=merge", "-p", patch)


class OperatorProcess:
    """`kubetune-operator` as a child process that a test may SIGKILL and start again."""

    def __init__(
        self,
        log_path: Path,
        namespaces: str = TEST_OPERATOR_NAMESPACES,
        ports: tuple[int, int] = (PROGRESS_PORT, METRICS_PORT),
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.log_path = log_path
        self.namespaces = namespaces
        self.ports = ports
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = dict(os.environ, KUBECONFIG=str(STATE / "kubeconfig"))
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
            env.pop(key, None)  # the operator must use each job's own Secret
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "kubetune-operator"),
                "--verbose",
                # One pattern (TEST_OPERATOR_NAMESPACES by default): kopf ORs
                # separate --namespace patterns together, and a leading "!"
                # glob implies "everything but". The Helm tests', the scale
                # benchmark's and the Kueue tests' namespaces have operators
                # of their own.
                f"--namespace={self.namespaces}",
                f"--progress-listen=127.0.0.1:{self.ports[0]}",
                f"--metrics-listen=127.0.0.1:{self.ports[1]}",
                *self.extra_args,
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)


@pytest.fixture(scope="session")
def crd_installed(cluster: Any) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl(
        "wait",
        "--for=condition=Established",
        "crd/trainablejobs.kubetune.io",
        "--timeout=60s",
    )


def stop_demo_operator() -> None:
    """`make demo` leaves an operator running for all namespaces; two operators
    would both act on the tests' jobs, so the tests stop it first."""
    pid_file = STATE / "operator.pid"
    if not pid_file.exists():
        return
    try:
        os.killpg(int(pid_file.read_text().strip()), signal.SIGTERM)
        print("stopped the operator `make demo` left running")
    except (ProcessLookupError, PermissionError, ValueError):
        pass
    pid_file.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def operator(crd_installed: None) -> Iterator[OperatorProcess]:
    stop_demo_operator()
    op = OperatorProcess(operator_log("operator-e2e"))
    op.start()
    yield op
    op.stop()


@pytest.fixture(scope="session")
def s3(cluster: Cluster) -> Any:
    client = cluster.s3()
    exists = (client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists)
    with contextlib.suppress(*exists):
        client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def job_ns(namespace: str, s3: Any, operator: OperatorProcess) -> str:
    """A fresh namespace holding the S3 credentials Secret, with the operator running."""
    create_credentials(namespace)
    return namespace


def create_credentials(namespace: str) -> None:
    """The S3 credentials Secret (SECRET) the tests' jobs name."""
    env = cluster_env()
    kubectl(
        "-n",
        namespace,
        "create",
        "secret",
        "generic",
        SECRET,
        f"--from-literal=AWS_ACCESS_KEY_ID={env['AWS_ACCESS_KEY_ID']}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={env['AWS_SECRET_ACCESS_KEY']}",
    )


def job_manifest(
    name: str, trainable: str = "tests.e2e.trainables:Counter", **spec: Any
) -> dict[str, Any]:
    env = cluster_env()
    body: dict[str, Any] = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TrainableJob",
        "metadata": {"name": name},
        "spec": {
            "trainable": trainable,
            "storage": {
                "uri": f"s3://{BUCKET}/runs-{uuid.uuid4().hex[:8]}",
                "endpointURL": env["AWS_ENDPOINT_URL"],
                "secretRef": {"name": SECRET},
            },
        },
    }
    body["spec"].update(spec)
    return body


def apply(namespace: str, manifest: dict[str, Any]) -> None:
    kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(manifest))


def get_job(namespace: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl("-n", namespace, "get", "tj", name, "-o", "json").stdout)


def wait_for(
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 120,
    what: str = "condition",
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = get_job(namespace, name)
        if predicate(job):
            return job
        time.sleep(0.2)
    raise AssertionError(
        f"timed out waiting for {what} on {name}: status={json.dumps(job.get('status'), indent=1)}"
    )


def phase_is(*phases: str) -> Callable[[dict[str, Any]], bool]:
    return lambda job: (job.get("status") or {}).get("phase") in phases


def condition(job: dict[str, Any], ctype: str) -> dict[str, Any]:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}


def job_pods(namespace: str, name: str) -> list[dict[str, Any]]:
    out = kubectl("-n", namespace, "get", "pods", "-l", f"kubetune.io/job={name}", "-o", "json")
    return list(json.loads(out.stdout)["items"])


def read_results(s3: Any, run_uri: str) -> list[dict[str, Any]]:
    bucket, _, prefix = run_uri[len("s3://") :].partition("/")
    body = s3.get_object(Bucket=bucket, Key=f"{prefix}/result.json")["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def object_exists(s3: Any, uri: str) -> bool:
    bucket, _, key = uri[len("s3://") :].partition("/")
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except Exception:
        return False


def time_checkpoint_upload(run_uri: str, size_mib: int) -> float:
    """Seconds to commit a checkpoint of the worker's size to the same S3 server."""
    env = cluster_env()
    creds = {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    store = RunStore(open_storage(run_uri, endpoint_url=env["AWS_ENDPOINT_URL"], credentials=creds))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "checkpoint.pkl").write_bytes(b"x" * size_mib * 1024 * 1024)
        t0 = time.monotonic()
        store.commit_checkpoint(Path(tmp), 1, {})
        return time.monotonic() - t0


def request_counts(port: int = METRICS_PORT) -> dict[str, float]:
    """The operator's API and S3 request counters, by series (waiting up to 60 s
    for an operator that was just started to serve them)."""
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
            break
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    counts = {}
    for line in text.splitlines():
        m = re.match(r"(kubetune_(?:api|s3)_requests_total\{[^}]*\}) (\S+)", line)
        if m:
            counts[m.group(1)] = float(m.group(2))
    return counts
