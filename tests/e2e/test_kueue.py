"""TrainableJobs queued through the real Kueue (v0.17.0, a process against the
local apiserver): quota holds a job back with no pod, priority preempts
without losing work, a user's suspend frees quota, and restarts of Kueue or
the operator change nothing of the outcome.

Each test gets a namespace named after it (test-kueue-*), a ClusterQueue of
its own with a quota of one GPU, and a LocalQueue `team-a`; an operator
started with --kueue serves these namespaces only.
"""

# mypy: disable-error-code="arg-type,union-attr,index"

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from operator_fixtures import (
    KUEUE_NAMESPACE_PREFIX,
    KUEUE_PORTS,
    REPO,
    OperatorProcess,
    apply,
    condition,
    create_credentials,
    get_job,
    job_manifest,
    kubectl,
    operator_log,
    phase_is,
    read_results,
    report_figure,
    request_counts,
    set_suspend,
    stop_demo_operator,
    time_checkpoint_upload,
    wait_condition,
    wait_for,
)

from localcluster.addons import kueue as local_kueue
from localcluster.config import Layout
from localcluster.testing import Cluster

pytestmark = pytest.mark.e2e

GROUP, VERSION = "kueue.x-k8s.io", "v1beta2"
QUEUE = "team-a"
EXAMPLE = REPO / "examples" / "kueue" / "queues.yaml"
GPU_NODES = ("kt-gpu1", "kt-gpu2")
KUEUE_METRICS_PORT = KUEUE_PORTS[1]
QUIET_S = 10


@pytest.fixture(scope="module")
def kueue_lay(cluster: Cluster) -> Layout:
    """Kueue running (built on first use), with the example's flavor and priority classes."""
    lay = Layout.discover()
    local_kueue.ensure_kueue(lay)
    shared = [
        d
        for d in yaml.safe_load_all(EXAMPLE.read_text())
        if d and d["kind"] in ("ResourceFlavor", "WorkloadPriorityClass")
    ]
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(shared))
    return lay


@pytest.fixture(scope="module")
def kueue_operator(crd_installed: None, kueue_lay: Layout) -> Iterator[OperatorProcess]:
    stop_demo_operator()
    op = OperatorProcess(
        operator_log("operator-kueue-e2e"),
        namespaces=f"{KUEUE_NAMESPACE_PREFIX}*",
        ports=KUEUE_PORTS,
        extra_args=("--kueue",),
    )
    op.start()
    yield op
    op.stop()


@pytest.fixture
def queue_ns(
    namespace: str, s3: Any, kueue_operator: OperatorProcess, cluster: Cluster
) -> Iterator[str]:
    """The test's namespace with credentials, its own ClusterQueue (one GPU;
    lower priority preempted within it) and the LocalQueue team-a."""
    assert namespace.startswith(KUEUE_NAMESPACE_PREFIX), namespace
    create_credentials(namespace)
    cq = f"cq-{namespace}"[:63]
    objects = [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClusterQueue",
            "metadata": {"name": cq},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "preemption": {"withinClusterQueue": "LowerPriority"},
                "resourceGroups": [
                    {
                        "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                        "flavors": [
                            {
                                "name": "gpu",
                                "resources": [
                                    {"name": "cpu", "nominalQuota": "16"},
                                    {"name": "memory", "nominalQuota": "64Gi"},
                                    {"name": "nvidia.com/gpu", "nominalQuota": 1},
                                ],
                            }
                        ],
                    }
                ],
            },
        },
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LocalQueue",
            "metadata": {"name": QUEUE, "namespace": namespace},
            "spec": {"clusterQueue": cq},
        },
    ]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    kubectl("wait", "--for=condition=Active", f"clusterqueue/{cq}", "--timeout=60s")
    yield namespace
    kubectl("delete", "clusterqueue", cq, "--wait=false", check=False)


def queued_job(name: str, priority: str = "", **spec: Any) -> dict[str, Any]:
    body = job_manifest(name, resources={"limits": {"nvidia.com/gpu": 1}}, **spec)
    labels = {f"{GROUP}/queue-name": QUEUE}
    if priority:
        labels[f"{GROUP}/priority-class"] = priority
    body["metadata"]["labels"] = labels
    return body


def workload_of(cluster: Cluster, namespace: str, job: str) -> dict[str, Any] | None:
    found = cluster.custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "workloads", label_selector=f"kubetune.io/job={job}"
    )["items"]
    assert len(found) <= 1, [w["metadata"]["name"] for w in found]
    return found[0] if found else None


def wl_true(wl: dict[str, Any] | None, ctype: str) -> bool:
    conds = ((wl or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == ctype and c["status"] == "True" for c in conds)


def pods_of(cluster: Cluster, namespace: str, job: str) -> list[Any]:
    return list(
        cluster.core.list_namespaced_pod(namespace, label_selector=f"kubetune.io/job={job}").items
    )


def running_pod(cluster: Cluster, namespace: str, job: str) -> Any:
    return next((p for p in pods_of(cluster, namespace, job) if p.status.phase == "Running"), None)


def iteration_of(job: dict[str, Any]) -> int:
    return int((job.get("status") or {}).get("iteration") or 0)


def results_of(s3: Any, manifest: dict[str, Any], namespace: str) -> list[int]:
    uri = f"{manifest['spec']['storage']['uri']}/{namespace}/{manifest['metadata']['name']}"
    return [r["training_iteration"] for r in read_results(s3, uri)]


def wait_complete(namespace: str, name: str, timeout_s: int = 120) -> None:
    """wait_condition(Complete), and on a timeout what Kueue and the operator
    said: the jobs' phases, each Workload's conditions and the operator's lines
    about the namespace, so a failure in CI can be read without the cluster."""
    try:
        wait_condition(namespace, name, "Complete", timeout_s)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{queue_story(namespace)}") from None


def queue_story(namespace: str) -> str:
    lines = ["jobs:"]
    jobs = json.loads(kubectl("-n", namespace, "get", "tj", "-o", "json").stdout)["items"]
    for job in jobs:
        st = job.get("status") or {}
        admitted = condition(job, "Admitted")
        lines.append(
            f"  {job['metadata']['name']}: {st.get('phase')} iteration={st.get('iteration')} "
            f"Admitted={admitted.get('status')} {admitted.get('message', '')}"
        )
    lines.append("workloads:")
    found = json.loads(kubectl("-n", namespace, "get", "workloads", "-o", "json").stdout)
    for wl in found["items"]:
        lines.append(f"  {wl['metadata']['name']} active={wl['spec'].get('active')}")
        for c in (wl.get("status") or {}).get("conditions") or []:
            lines.append(f"    {c['type']}={c['status']} {c.get('reason')}: {c.get('message')}")
    pods = kubectl("-n", namespace, "get", "pods", "-o", "wide", check=False)
    lines.append(f"pods:\n{pods.stdout}{pods.stderr}")
    log = operator_log("operator-kueue-e2e")
    mine = [ln for ln in log.read_text(errors="replace").splitlines() if namespace in ln]
    lines.append("operator log:")
    lines.extend(f"  {ln[:300]}" for ln in mine[-40:])
    return "\n".join(lines)


def events_of(namespace: str, name: str) -> str:
    return kubectl(
        "-n", namespace, "get", "events", f"--field-selector=involvedObject.name={name}",
        "-o", "custom-columns=REASON:.reason,MESSAGE:.message", "--no-headers",
    ).stdout  # fmt: skip


def test_kueue_quota_holds_the_second_job_until_the_first_finishes(
    queue_ns: str, cluster: Cluster, s3: Any
) -> None:
    ns = queue_ns
    apply(ns, queued_job("first", config={"sleep": 0.1}, stop={"training_iteration": 30}))
    wait_for(ns, "first", phase_is("Running"), what="first Running")
    second = queued_job("second", config={"sleep": 0.05}, stop={"training_iteration": 5})
    apply(ns, second)
    job = wait_for(
        ns, "second", lambda j: "quota" in condition(j, "Admitted").get("message", ""),
        what="second waiting for quota",
    )  # fmt: skip
    admitted = condition(job, "Admitted")
    assert admitted["status"] == "False" and "nvidia.com/gpu" in admitted["message"], admitted
    assert job["status"]["phase"] == "Pending"
    assert pods_of(cluster, ns, "second") == []
    assert "quota" in events_of(ns, "second")

    # Quota free (first's Workload Finished) -> second's pod starts.
    freed = started = None
    deadline = time.monotonic() + 120
    while started is None and time.monotonic() < deadline:
        if freed is None and wl_true(workload_of(cluster, ns, "first"), "Finished"):
            freed = time.monotonic()
        pod = running_pod(cluster, ns, "second")
        if pod is not None:
            started = time.monotonic()
            assert freed is not None, "second ran before first's quota was given back"
            assert pod.spec.node_selector.get("nvidia.com/gpu.present") == "true"
            assert pod.spec.node_name in GPU_NODES
        time.sleep(0.05)
    assert started is not None and freed is not None, "second never started"
    assert get_job(ns, "first")["status"]["phase"] == "Succeeded"
    wait_complete(ns, "second")
    # The Workload is marked Finished right after the job's status.
    deadline = time.monotonic() + 10
    while not wl_true(workload_of(cluster, ns, "second"), "Finished"):
        assert time.monotonic() < deadline, "second's Workload never Finished"
        time.sleep(0.1)
    report_figure(
        f"kueue: {started - freed:.2f}s from a job's quota given back (Workload Finished) "
        "to the next queued job's pod Running"
    )


def test_kueue_high_priority_preempts_low_without_losing_work(
    queue_ns: str, cluster: Cluster, s3: Any
) -> None:
    ns = queue_ns
    low = queued_job(
        "low", "low", config={"sleep": 0.2, "payload_mb": 4},
        stop={"training_iteration": 50}, checkpoint={"frequency": 5},
    )  # fmt: skip
    apply(ns, low)
    wait_for(ns, "low", lambda j: iteration_of(j) >= 8, what="low at iteration 8")
    apply(ns, queued_job("high", "high", config={"sleep": 0.05}, stop={"training_iteration": 10}))

    evicted = gone = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        low_pods, high_pods = pods_of(cluster, ns, "low"), pods_of(cluster, ns, "high")
        wl = workload_of(cluster, ns, "low")
        if evicted is None and wl_true(wl, "Evicted"):
            evicted = time.monotonic()
        assert not (low_pods and high_pods), "high's pod exists beside low's"
        if low_pods:
            assert wl_true(wl, "QuotaReserved"), "low's quota went back before its pod was gone"
        elif evicted is not None and gone is None:
            gone = time.monotonic()
        if any(p.status.phase == "Running" for p in high_pods):
            break
        time.sleep(0.05)
    assert evicted is not None and gone is not None, "low was never preempted"
    job = get_job(ns, "low")
    assert job["status"]["preemptions"] == 1 and job["status"]["failures"] == 0
    assert "Preempted" in events_of(ns, "low")

    wait_complete(ns, "high", 120)
    wait_complete(ns, "low", 180)
    final = get_job(ns, "low")["status"]
    assert (final["preemptions"], final["failures"]) == (1, 0), final
    iterations = results_of(s3, low, ns)
    assert set(iterations) == set(range(1, 51)), iterations  # nothing lost
    assert len(iterations) - len(set(iterations)) <= 1  # at most the one in flight, twice
    upload = time_checkpoint_upload(f"{low['spec']['storage']['uri']}/upload-probe", 4)
    report_figure(
        f"kueue: {gone - evicted:.2f}s from low's eviction (preempted by high) to its pod "
        f"gone, checkpoint included; committing its 4 MiB checkpoint alone takes {upload:.2f}s"
    )


def test_kueue_user_suspend_frees_quota_and_resume_requeues(
    queue_ns: str, cluster: Cluster, s3: Any
) -> None:
    ns = queue_ns
    first = queued_job("first", config={"sleep": 0.2}, stop={"training_iteration": 30})
    apply(ns, first)
    wait_for(ns, "first", lambda j: iteration_of(j) >= 5, what="first at iteration 5")
    apply(ns, queued_job("second", config={"sleep": 0.2}, stop={"training_iteration": 15}))
    wait_for(ns, "second", lambda j: condition(j, "Admitted").get("status") == "False")

    set_suspend(ns, "first", True)
    job = wait_for(ns, "first", phase_is("Suspended"), what="first Suspended")
    assert job["status"]["latestCheckpoint"]["iteration"] >= 5
    assert workload_of(cluster, ns, "first")["spec"]["active"] is False
    wait_for(ns, "second", phase_is("Running"), what="second admitted and Running")

    set_suspend(ns, "first", False)
    job = wait_for(ns, "first", phase_is("Pending"), what="first queued again")
    assert condition(job, "Admitted")["status"] == "False"
    assert pods_of(cluster, ns, "first") == []
    wait_complete(ns, "second", 120)
    wait_complete(ns, "first", 150)
    final = get_job(ns, "first")["status"]
    assert (final["preemptions"], final["failures"]) == (0, 0), final
    iterations = results_of(s3, first, ns)
    assert set(iterations) == set(range(1, 31)) and len(iterations) - len(set(iterations)) <= 1


def test_kueue_restarts_of_kueue_and_the_operator_change_nothing(
    queue_ns: str, cluster: Cluster, s3: Any, kueue_operator: OperatorProcess, kueue_lay: Layout
) -> None:
    ns = queue_ns
    low = queued_job(
        "low", "low", config={"sleep": 0.2}, stop={"training_iteration": 150},
        checkpoint={"frequency": 5},
    )  # fmt: skip
    apply(ns, low)
    wait_for(ns, "low", lambda j: iteration_of(j) >= 5, what="low at iteration 5")
    kueue_operator.kill()
    local_kueue.restart_kueue(kueue_lay)
    kueue_operator.start()
    # Still admitted after both restarts: the worker ran on, no second pod.
    time.sleep(3)
    assert wl_true(workload_of(cluster, ns, "low"), "Admitted")
    assert len(pods_of(cluster, ns, "low")) == 1
    apply(ns, queued_job("high", "high", config={"sleep": 0.05}, stop={"training_iteration": 8}))
    wait_for(ns, "low", phase_is("Restarting", "Pending"), what="low preempted")
    kueue_operator.kill()  # mid-preemption
    kueue_operator.start()
    local_kueue.restart_kueue(kueue_lay)
    wait_complete(ns, "high", 150)
    wait_complete(ns, "low", 180)
    final = get_job(ns, "low")["status"]
    assert (final["preemptions"], final["failures"]) == (1, 0), final
    assert final["attempt"] == 2  # one pod before the preemption, one after
    iterations = results_of(s3, low, ns)
    assert set(iterations) == set(range(1, 151)) and len(iterations) - len(set(iterations)) <= 1


def test_kueue_delete_releases_quota_missing_queue_is_shown_unlabelled_runs(
    queue_ns: str, cluster: Cluster, kueue_operator: OperatorProcess, kueue_lay: Layout
) -> None:
    ns = queue_ns
    apply(ns, queued_job("doomed", config={"sleep": 0.2}, stop={"training_iteration": 500}))
    wait_for(ns, "doomed", phase_is("Running"), what="doomed Running")
    apply(ns, queued_job("waiting", config={"sleep": 0.05}, stop={"training_iteration": 3}))
    wait_for(ns, "waiting", lambda j: condition(j, "Admitted").get("status") == "False")
    # Both restarted while one job holds the quota and one waits: nothing moves.
    kueue_operator.kill()
    local_kueue.restart_kueue(kueue_lay)
    kueue_operator.start()
    time.sleep(3)
    assert pods_of(cluster, ns, "waiting") == []
    assert [p.metadata.name for p in pods_of(cluster, ns, "doomed")] == ["doomed-worker-1"]
    assert get_job(ns, "waiting")["status"]["phase"] == "Pending"
    kubectl("-n", ns, "delete", "tj", "doomed", "--wait=false")
    wait_complete(ns, "waiting", 120)

    lost = queued_job("lost", stop={"training_iteration": 3})
    lost["metadata"]["labels"][f"{GROUP}/queue-name"] = "no-such-queue"
    apply(ns, lost)
    job = wait_for(
        ns, "lost", lambda j: "no-such-queue" in condition(j, "Admitted").get("message", ""),
        what="the missing LocalQueue in status",
    )  # fmt: skip
    assert job["status"]["phase"] == "Pending" and pods_of(cluster, ns, "lost") == []

    plain = job_manifest("plain", config={"sleep": 0.02}, stop={"training_iteration": 3})
    apply(ns, plain)
    wait_complete(ns, "plain", 90)
    assert workload_of(cluster, ns, "plain") is None
    assert not condition(get_job(ns, "plain"), "Admitted")

    # A job waiting in a queue costs the operator nothing while Kueue's answer
    # stays the same (only this test's jobs are served by this operator now).
    time.sleep(2)
    before = request_counts(KUEUE_METRICS_PORT)
    time.sleep(QUIET_S)
    after = request_counts(KUEUE_METRICS_PORT)
    moved = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert moved == {}, f"requests while one job waited in a missing queue: {moved}"
    report_figure(f"kueue: a job waiting in a queue cost 0 API and S3 requests in {QUIET_S}s")
