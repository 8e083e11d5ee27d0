"""Worker and operator pods meet the restricted Pod Security Standard, as the
API server's own PodSecurity admission judges them: in a namespace labelled
`pod-security.kubernetes.io/enforce=restricted`, a pod without the settings is
refused (so these tests can fail), the operator's worker pods are admitted, and
the chart installs an operator that runs a job there to Complete.

Admission is the proof, not the kernel: the local node agent runs pods as local
processes and ignores runAsUser, seccomp profiles and capabilities.
"""

# The typed client takes models and marks every field Optional; these tests pass
# manifests as dicts (the client validates them) and read fields the API always sets.
# mypy: disable-error-code="arg-type,union-attr"

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from chart_fixtures import CRD, JOB, ChartRelease, job_manifest
from kubernetes.client.rest import ApiException
from operator_fixtures import (
    SECRET,
    apply,
    condition,
    get_job,
    wait_condition,
)
from operator_fixtures import job_manifest as job_manifest_for

from kubetune_operator.model import JobView
from kubetune_operator.podspec import PodSettings, build_worker_pod
from localcluster.testing import Cluster, python_pod

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
REFUSED = "violates PodSecurity"


def enforce_restricted(cluster: Cluster, namespace: str) -> None:
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})


def admission_refusal(cluster: Cluster, namespace: str, pod: dict[str, Any]) -> str:
    """PodSecurity's message when it refuses `pod`, "" when it admits it (a
    server-side dry run: admission runs in full, nothing is stored)."""
    try:
        cluster.core.create_namespaced_pod(namespace, pod, dry_run="All")
    except ApiException as err:
        message = str(json.loads(err.body or "{}").get("message") or err.reason)
        assert err.status == 403 and REFUSED in message, f"refused, not by PodSecurity: {message}"
        return message
    return ""


def worker_pod(namespace: str, template: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "trainable": "tests.e2e.trainables:Counter",
        "storage": {"uri": "s3://bucket/runs", "secretRef": {"name": SECRET}},
    }
    if template is not None:
        spec["template"] = template
    job = JobView("pss", namespace, "0c4f5a2e-uid", 1, spec, {})
    settings = PodSettings(progress_url="http://127.0.0.1:8470/v1alpha1/progress")
    return build_worker_pod(job, 1, settings)


def test_restricted_admission_refuses_a_bare_pod_and_admits_worker_pods(
    cluster: Cluster, namespace: str
) -> None:
    enforce_restricted(cluster, namespace)
    # The API server enforces the label: a pod with no securityContext is refused.
    bare = admission_refusal(cluster, namespace, python_pod("bare", "print(1)"))
    assert "runAsNonRoot" in bare and "allowPrivilegeEscalation" in bare, bare

    sidecars = {
        "spec": {
            "securityContext": {"runAsUser": 10001, "fsGroup": 10001},
            "initContainers": [{"name": "fetch", "image": "busybox", "command": ["true"]}],
            "containers": [
                {"name": "worker", "securityContext": {"readOnlyRootFilesystem": True}},
                {"name": "proxy", "image": "envoy", "securityContext": {"runAsUser": 7}},
            ],
        }
    }
    for name, template in (("plain", None), ("sidecars", sidecars)):
        refusal = admission_refusal(cluster, namespace, worker_pod(namespace, template))
        assert not refusal, f"the {name} worker pod was refused: {refusal}"

    # The template wins, and admission still judges what it asked for.
    root = {"spec": {"securityContext": {"runAsNonRoot": False}}}
    refused = admission_refusal(cluster, namespace, worker_pod(namespace, root))
    assert "runAsNonRoot" in refused, refused


def test_chart_installs_and_runs_a_job_in_a_restricted_namespace(
    cluster: Cluster, chart_release: ChartRelease, s3: Any
) -> None:
    ns, release = chart_release.namespace, chart_release.name
    enforce_restricted(cluster, ns)
    chart_release.install()
    cluster.kubectl("wait", "--for=condition=Established", CRD, "--timeout=60s")
    deploy = f"deployment/{release}"
    ready = cluster.kubectl(
        "-n", ns, "wait", "--for=condition=Available", deploy, "--timeout=120s",
        check=False, timeout=150,
    )  # fmt: skip
    if ready.returncode != 0:
        # A refused pod shows only as the ReplicaSet's FailedCreate event.
        events = cluster.kubectl("-n", ns, "get", "events", "-o", "wide", check=False)
        pytest.fail(f"the operator is not Available in {ns}:\n{events.stdout[-3000:]}")

    cluster.kubectl(
        "-n", ns, "create", "secret", "generic", SECRET,
        f"--from-literal=AWS_ACCESS_KEY_ID={cluster.s3_env['AWS_ACCESS_KEY_ID']}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={cluster.s3_env['AWS_SECRET_ACCESS_KEY']}",
    )  # fmt: skip
    cluster.apply(yaml.safe_dump(job_manifest(f"pss-{ns}")), ns)
    done = cluster.kubectl(
        "-n", ns, "wait", "--for=condition=Complete", f"tj/{JOB}", "--timeout=180s",
        check=False, timeout=200,
    )  # fmt: skip
    job = json.loads(cluster.kubectl("-n", ns, "get", "tj", JOB, "-o", "json").stdout)
    if done.returncode != 0:
        op_log = cluster.kubectl("-n", ns, "logs", deploy, check=False).stdout
        pytest.fail(
            f"job did not complete in a restricted namespace: {done.stderr.strip()}\n"
            f"status: {json.dumps(job.get('status'), indent=1)}\n"
            f"operator log:\n{op_log[-3000:]}"
        )

    # What admission let through is what the pods carry.
    worker = cluster.core.read_namespaced_pod(job["status"]["workerPod"], ns)
    assert worker.spec.security_context.run_as_non_root is True
    assert worker.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    [ctr] = worker.spec.containers
    assert ctr.security_context.allow_privilege_escalation is False
    assert ctr.security_context.capabilities.drop == ["ALL"]
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"
    [op] = cluster.core.list_namespaced_pod(ns, label_selector=selector).items
    assert op.spec.security_context.run_as_non_root is True
    assert op.spec.containers[0].security_context.capabilities.drop == ["ALL"]


def test_a_job_whose_pod_pod_security_refuses_fails_with_its_reason(
    cluster: Cluster, job_ns: str
) -> None:
    """A template that asks for what the namespace forbids: admission refuses
    the pod (403), and the job says so instead of retrying for ever."""
    enforce_restricted(cluster, job_ns)
    template = {"spec": {"securityContext": {"runAsNonRoot": False}}}
    apply(job_ns, job_manifest_for("as-root", template=template))
    wait_condition(job_ns, "as-root", "Failed", timeout_s=60)
    failed = condition(get_job(job_ns, "as-root"), "Failed")
    assert failed["reason"] == "InvalidSpec", failed
    assert REFUSED in failed["message"] and "runAsNonRoot" in failed["message"], failed
