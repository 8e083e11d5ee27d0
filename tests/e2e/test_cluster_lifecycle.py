"""Acceptance of the local cluster's controllers and deletion semantics: the
garbage collector removes pods of a deleted owner, Jobs complete, and deleting
a pod delivers SIGTERM and honours its grace period."""

# The typed client takes models and marks every field Optional; these tests pass
# manifests as dicts (the client validates them) and read fields the API always sets.
# mypy: disable-error-code="arg-type,union-attr,index"

from __future__ import annotations

import time
from pathlib import Path

import pytest

from localcluster.testing import Cluster, python_pod, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SLEEPER = "import time\nwhile True: time.sleep(0.1)\n"


def test_deleting_the_owner_garbage_collects_its_pods(cluster: Cluster, namespace: str) -> None:
    owner = cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for name in ("child-a", "child-b"):
        pod = python_pod(name, SLEEPER)
        pod["metadata"]["ownerReferences"] = [ref]
        cluster.core.create_namespaced_pod(namespace, pod)
    cluster.wait_pod_phase(namespace, "child-a", ("Running",))
    cluster.wait_pod_phase(namespace, "child-b", ("Running",))

    cluster.core.delete_namespaced_config_map("owner", namespace)

    cluster.wait_pod_gone(namespace, "child-a", timeout=60)
    cluster.wait_pod_gone(namespace, "child-b", timeout=60)


def test_job_runs_to_complete(cluster: Cluster, namespace: str) -> None:
    template = python_pod("unused", "print('job step done')")
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "steps"},
        "spec": {
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 0,
            "template": {"spec": template["spec"]},
        },
    }
    cluster.batch.create_namespaced_job(namespace, job)

    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Complete", "job/steps", "--timeout=90s"
    )

    status = cluster.batch.read_namespaced_job("steps", namespace).status
    assert status.succeeded == 2
    assert "job step done" in cluster.logs(namespace, "job/steps")


def test_failing_job_ends_failed(cluster: Cluster, namespace: str) -> None:
    template = python_pod("unused", "raise SystemExit(7)")
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "broken"},
        "spec": {"backoffLimit": 0, "template": {"spec": template["spec"]}},
    }
    cluster.batch.create_namespaced_job(namespace, job)

    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Failed", "job/broken", "--timeout=90s"
    )

    pods = cluster.core.list_namespaced_pod(namespace, label_selector="job-name=broken").items
    assert [p.status.container_statuses[0].state.terminated.exit_code for p in pods] == [7]


def _trapping_pod(name: str, out: Path, grace: int, exit_on_term: bool) -> dict[str, object]:
    code = (
        "import signal, sys, time\n"
        "def on_term(*_):\n"
        "    open('/mnt/kubetune-e2e/out/terminated', 'w').write(repr(time.time()))\n"
        f"    if {exit_on_term}: sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "open('/mnt/kubetune-e2e/out/started', 'w').write('yes')\n"
        "while True: time.sleep(0.05)\n"
    )
    return python_pod(
        name,
        code,
        container={"volumeMounts": [{"name": "out", "mountPath": "/mnt/kubetune-e2e/out"}]},
        extra_spec={
            "terminationGracePeriodSeconds": grace,
            "volumes": [{"name": "out", "hostPath": {"path": str(out), "type": "Directory"}}],
        },
    )


def test_delete_sends_sigterm_and_kills_after_the_grace_period(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    grace = 4
    cluster.core.create_namespaced_pod(namespace, _trapping_pod("stubborn", tmp_path, grace, False))
    wait_for("the process to start", lambda: (tmp_path / "started").exists(), timeout=60)

    asked = time.time()
    begin = time.monotonic()
    cluster.core.delete_namespaced_pod("stubborn", namespace)
    gone = cluster.wait_pod_gone(namespace, "stubborn", timeout=60)

    sigterm_at = float((tmp_path / "terminated").read_text())
    assert 0 <= sigterm_at - asked < 2, "SIGTERM came late"
    elapsed = gone - begin
    print(f"grace {grace}s: pod gone {elapsed:.1f}s after the delete")
    assert grace <= elapsed < grace + 5, "the process was not given (only) its grace period"


def test_delete_of_a_process_that_exits_on_sigterm_is_quick(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster.core.create_namespaced_pod(namespace, _trapping_pod("polite", tmp_path, 30, True))
    wait_for("the process to start", lambda: (tmp_path / "started").exists(), timeout=60)

    begin = time.monotonic()
    cluster.core.delete_namespaced_pod("polite", namespace)
    gone = cluster.wait_pod_gone(namespace, "polite", timeout=60)

    assert (tmp_path / "terminated").exists()
    assert gone - begin < 5, "the pod waited for the grace period though its process ended"
