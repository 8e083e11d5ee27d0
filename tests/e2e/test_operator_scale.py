"""Many jobs at once on the real cluster: worker pods on kwok's fake nodes, their
workers played by the load generator (bench/loadgen.py), which reports through
the same endpoint and token path a real worker uses. Hundreds of jobs all end
right, and SIGKILLing the operator mid-flight never makes a second pod."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from operator_fixtures import (
    BUCKET,
    PROGRESS_PORT,
    REPO,
    SECRET,
    STATE,
    OperatorProcess,
    cluster_env,
    kubectl,
    report_figure,
)

from localcluster.addons.kwok import NODE_SELECTOR, TOLERATION

pytestmark = pytest.mark.e2e

PY = str(Path(sys.executable))
KWOK_NODES = 20


def localcluster(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "localcluster", *args], cwd=REPO, capture_output=True, text=True, check=check
    )


@pytest.fixture(scope="module")
def kwok_nodes(operator: OperatorProcess) -> Iterator[None]:
    """kwok's fake nodes (built from source once, cached like the control plane)."""
    was_up = localcluster("kwok", "status", check=False).returncode == 0
    up = localcluster("kwok", "up", "--nodes", str(KWOK_NODES), check=False)
    assert up.returncode == 0, up.stdout + up.stderr
    yield
    if not was_up:
        localcluster("kwok", "down", check=False)


@pytest.fixture
def players(job_ns: str, kwok_nodes: None, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The load generator playing the workers of this namespace's kwok pods."""
    log = (tmp_path / "loadgen.log").open("wb")
    proc = subprocess.Popen(
        [
            PY, str(REPO / "bench" / "loadgen.py"), "--namespace", job_ns, "--transport", "push",
            "--url", f"http://127.0.0.1:{PROGRESS_PORT}/v1alpha1/progress", "--interval", "0.5",
            "--final-to-s3",
        ],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


def played_job(name: str, iterations: int) -> dict[str, Any]:
    storage = {
        "uri": f"s3://{BUCKET}/scale",
        "endpointURL": cluster_env()["AWS_ENDPOINT_URL"],
        "secretRef": {"name": SECRET},
    }
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TrainableJob",
        "metadata": {"name": name},
        "spec": {
            # Never imported: kwok runs no process, the load generator plays it.
            "trainable": "bench.loadgen:PlayedByLoadGenerator",
            "stop": {"training_iteration": iterations},
            "storage": storage,
            "template": {
                "metadata": {"annotations": {"kubetune.io/loadgen": str(iterations)}},
                "spec": {"nodeSelector": dict(NODE_SELECTOR), "tolerations": [dict(TOLERATION)]},
            },
        },
    }


def create_all(namespace: str, count: int, iterations: int) -> float:
    """Creates count jobs at once (one kubectl call); returns when it was done."""
    items = [played_job(f"s{i:04d}", iterations) for i in range(count)]
    kubectl(
        "-n",
        namespace,
        "create",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
    )
    return time.monotonic()


class PodWatch:
    """Counts, per job, worker pods that existed at the same time (a duplicate
    would be a second pod while the first is still there)."""

    def __init__(self, namespace: str) -> None:
        config.load_kube_config(str(STATE / "kubeconfig"))
        self.core = client.CoreV1Api()
        self.namespace = namespace
        self.live: dict[str, set[str]] = {}
        self.most: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        w = watch.Watch()
        for event in w.stream(
            self.core.list_namespaced_pod, self.namespace, label_selector="kubetune.io/job",
            timeout_seconds=900,
        ):  # fmt: skip
            pod = event["object"]
            job = pod.metadata.labels["kubetune.io/job"]
            pods = self.live.setdefault(job, set())
            if event["type"] == "DELETED":
                pods.discard(pod.metadata.name)
            else:
                pods.add(pod.metadata.name)
            self.most[job] = max(self.most[job], len(pods))
            if self._stop.is_set():
                w.stop()

    def stop(self) -> None:
        self._stop.set()


def jobs_by_phase(namespace: str) -> tuple[Counter[str], list[dict[str, Any]]]:
    out = kubectl("-n", namespace, "get", "tj", "-o", "json").stdout
    items = json.loads(out)["items"]
    return Counter((j.get("status") or {}).get("phase", "") for j in items), items


def wait_all_succeeded(namespace: str, count: int, timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        phases, items = jobs_by_phase(namespace)
        if phases.get("Succeeded", 0) == count:
            return items
        if time.monotonic() > deadline:
            raise AssertionError(f"not all {count} jobs succeeded in {timeout_s}s: {dict(phases)}")
        time.sleep(2)


def assert_each_ended_right(
    namespace: str, items: list[dict[str, Any]], iterations: int, watcher: PodWatch
) -> None:
    wrong = []
    for job in items:
        st = job["status"]
        name = job["metadata"]["name"]
        conds = {c["type"]: c["status"] for c in st["conditions"]}
        ok = (
            st.get("iteration") == iterations
            and (st.get("lastResult") or {}).get("training_iteration") == iterations
            and conds.get("Complete") == "True"
            and conds.get("Finished") == "True"
            and st.get("failures") == 0
            and st.get("attempt") == 1
        )
        if not ok:
            keys = ("phase", "iteration", "failures", "preemptions", "attempt")
            wrong.append(f"{name}: {json.dumps({k: st.get(k) for k in keys})}")
    assert not wrong, f"{len(wrong)} jobs ended wrong: " + "; ".join(wrong[:10])
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"]
    per_job = Counter(p["metadata"]["labels"]["kubetune.io/job"] for p in pods)
    assert set(per_job.values()) == {1} and len(per_job) == len(items), per_job.most_common(5)
    assert max(watcher.most.values()) == 1, watcher.most.most_common(5)


def test_300_jobs_created_at_once_all_complete(job_ns: str, players: Any) -> None:
    """About 55-65 s, and must: 300 jobs created in one call, each run to
    Succeeded through the operator, with no duplicate pod."""
    count, iterations = 300, 10
    watcher = PodWatch(job_ns)
    t0 = time.monotonic()
    created = create_all(job_ns, count, iterations)
    items = wait_all_succeeded(job_ns, count, timeout_s=600)
    watcher.stop()
    report_figure(
        f"{count} jobs created at once: created in {created - t0:.1f}s, "
        f"all Succeeded {time.monotonic() - t0:.1f}s after the first"
    )
    assert_each_ended_right(job_ns, items, iterations, watcher)


def test_operator_sigkilled_twice_mid_flight(
    job_ns: str, players: Any, operator: OperatorProcess
) -> None:
    """About 70 s, and must: 200 jobs of ~20 s each, the operator SIGKILLed at
    8 s and 18 s, and every job then run to Succeeded with no duplicate pod."""
    count, iterations = 200, 40  # each worker plays ~20 s
    watcher = PodWatch(job_ns)
    t0 = time.monotonic()
    create_all(job_ns, count, iterations)
    for at in (8, 18):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        phases, _ = jobs_by_phase(job_ns)
        operator.kill()
        report_figure(f"SIGKILL of the operator at {at}s with jobs {dict(phases)}")
        time.sleep(1)
        operator.start()
    items = wait_all_succeeded(job_ns, count, timeout_s=600)
    watcher.stop()
    report_figure(
        f"{count} jobs through two operator SIGKILLs: all Succeeded in {time.monotonic() - t0:.1f}s"
    )
    assert_each_ended_right(job_ns, items, iterations, watcher)
