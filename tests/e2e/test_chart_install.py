"""The Helm chart installs a working operator: `helm install` on the real local
cluster, the operator runs in its pod as its own service account (so the
chart's least-privilege RBAC is what it really gets), runs a job to the end,
and `helm uninstall` takes it away again.

The namespace is named `kubetune-helm-*`, which the test operator process of
the other end-to-end tests skips, so the installed operator has its jobs to
itself.
"""

# The typed client marks every field Optional; these read fields the API always sets.
# mypy: disable-error-code="arg-type,union-attr"

from __future__ import annotations

import json
import re
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes.client.rest import ApiException
from operator_fixtures import BUCKET, HELM_NAMESPACE_PREFIX, SECRET, cluster_env

from localcluster.testing import Cluster, wait_for

CHART = "charts/kubetune"
JOB = "helm-counter"
CRD = "crd/trainablejobs.kubetune.io"
# What an operator short of rights would log: kopf and the client both name it.
# (A bare "403" would also match a timestamp's milliseconds.)
FORBIDDEN = re.compile(r"""forbidden|\(403\)|['"]code['"]: ?403""", re.IGNORECASE)


def helm(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if cluster.helm_path is None:
        pytest.fail("helm is missing from .cluster/bin: run `make cluster-up` again")
    proc = subprocess.run(
        [str(cluster.helm_path), *args],
        cwd=cluster.repo,
        capture_output=True,
        text=True,
        env=cluster.env,
        timeout=300,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


@pytest.fixture
def helm_ns(cluster: Cluster) -> Iterator[str]:
    """A fresh `kubetune-helm-*` namespace, deleted afterwards (jobs' finalizers
    first, in case the test stopped before its operator finished them)."""
    name = f"{HELM_NAMESPACE_PREFIX}{uuid.uuid4().hex[:6]}"
    cluster.create_namespace(name)
    yield name
    left = cluster.kubectl("-n", name, "get", "tj", "-o", "name", check=False).stdout.split()
    for job in left:
        patch = '{"metadata":{"finalizers":null}}'
        cluster.kubectl("-n", name, "patch", job, "--type=merge", "-p", patch, check=False)
    try:
        cluster.core.delete_namespace(name)
    except ApiException as err:
        if err.status != 404:
            raise


def job_manifest(run_prefix: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TrainableJob",
        "metadata": {"name": JOB},
        "spec": {
            "trainable": "tests.e2e.trainables:Counter",
            "config": {"sleep": 0.05},
            "stop": {"training_iteration": 10},
            "checkpoint": {"frequency": 5},
            "storage": {
                "uri": f"s3://{BUCKET}/{run_prefix}",
                "endpointURL": cluster_env()["AWS_ENDPOINT_URL"],
                "secretRef": {"name": SECRET},
            },
        },
    }


def can_i(cluster: Cluster, sa: str, verb: str, resource: str, namespace: str | None) -> bool:
    """`kubectl auth can-i` as `sa`; `resource` may name a subresource (`kind/status`)."""
    kind, _, sub = resource.partition("/")
    where = ["-n", namespace] if namespace else ["--all-namespaces"]
    args = ["auth", "can-i", verb, kind, *where, f"--as={sa}"]
    if sub:
        args.append(f"--subresource={sub}")
    return cluster.kubectl(*args, check=False).stdout.strip() == "yes"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def operator_pods(cluster: Cluster, namespace: str, release: str) -> list[Any]:
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"
    return list(cluster.core.list_namespaced_pod(namespace, label_selector=selector).items)


def test_helm_install_runs_a_job_with_least_privilege(
    cluster: Cluster, helm_ns: str, s3: Any
) -> None:
    ns = helm_ns
    # The release name says kubetune, so it is the full name of every object too,
    # and the cluster-scoped ones (ClusterRole, binding) are this test's own.
    release = f"kubetune-{ns.removeprefix(HELM_NAMESPACE_PREFIX)}"
    sa = f"system:serviceaccount:{ns}:{release}"
    watch = f"watchNamespaces={json.dumps([ns])}"
    # Pods share the host's network here: a free port keeps the liveness
    # endpoint clear of anything else listening on the chart's default.
    health_port, progress_port, metrics_port = free_port(), free_port(), free_port()
    # No Service routing here either: workers reach the operator's own port.
    progress_url = f"http://127.0.0.1:{progress_port}/v1alpha1/progress"
    helm(
        cluster,
        "install",
        release,
        CHART,
        "-n",
        ns,
        "--set-json",
        watch,
        "--set",
        f"verbose=true,livenessProbe.port={health_port},progress.port={progress_port},"
        f"metrics.port={metrics_port},progress.url={progress_url}",
    )
    installed = True
    try:
        # The chart's crds/ installs the CRD unless it is there already.
        cluster.kubectl("wait", "--for=condition=Established", CRD, "--timeout=60s")

        # Least privilege as the API server sees it: rights in the watched
        # namespace only, and none on Secrets anywhere else.
        expected = {
            ("get", "secrets", ns): True,
            ("create", "pods", ns): True,
            ("create", "pods", "default"): False,
            ("patch", "trainablejobs.kubetune.io/status", ns): True,
            # The operator never writes spec: patch is for kopf's finalizer and annotations.
            ("update", "trainablejobs.kubetune.io", ns): False,
            ("get", "secrets", "default"): False,
            ("list", "secrets", None): False,
            # Worker tokens sent with progress reports are checked by the API.
            ("create", "tokenreviews.authentication.k8s.io", None): True,
        }
        wrong = [
            f"{verb} {resource} in {where or 'all namespaces'}: expected {'yes' if want else 'no'}"
            for (verb, resource, where), want in expected.items()
            if can_i(cluster, sa, verb, resource, where) != want
        ]
        assert not wrong, f"{sa} has the wrong rights: " + "; ".join(wrong)

        # The controller manager makes the ReplicaSet and pod; the node runs
        # `kubetune-operator` in it with the pod's service-account token.
        deploy = f"deployment/{release}"
        cluster.kubectl(
            "-n", ns, "wait", "--for=condition=Available", deploy, "--timeout=120s", timeout=150
        )
        [op_pod] = operator_pods(cluster, ns, release)
        assert op_pod.spec.service_account_name == release
        # kopf's liveness endpoint, as the chart's probe would call it.
        wait_for(
            f"the operator's liveness endpoint on port {health_port}",
            lambda: healthz(health_port),
            timeout=60,
        )

        cluster.kubectl(
            "-n",
            ns,
            "create",
            "secret",
            "generic",
            SECRET,
            f"--from-literal=AWS_ACCESS_KEY_ID={cluster.s3_env['AWS_ACCESS_KEY_ID']}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={cluster.s3_env['AWS_SECRET_ACCESS_KEY']}",
        )
        run_prefix = f"helm-{uuid.uuid4().hex[:8]}"
        cluster.apply(yaml.safe_dump(job_manifest(run_prefix)), ns)
        done = cluster.kubectl(
            "-n",
            ns,
            "wait",
            "--for=condition=Complete",
            f"tj/{JOB}",
            "--timeout=180s",
            check=False,
            timeout=200,
        )
        job = json.loads(cluster.kubectl("-n", ns, "get", "tj", JOB, "-o", "json").stdout)
        op_logs = cluster.kubectl("-n", ns, "logs", deploy, check=False).stdout
        assert done.returncode == 0, (
            f"job did not complete: {done.stderr.strip()}\n"
            f"status: {json.dumps(job.get('status'), indent=1)}\n"
            f"operator log (last lines):\n{op_logs[-4000:]}"
        )
        status = job["status"]
        assert status["phase"] == "Succeeded"
        assert status["latestCheckpoint"]["iteration"] == 10

        # The worker's data went to the job's own folder under the storage URI.
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{run_prefix}/{ns}/{JOB}/")
        keys = {o["Key"].rsplit("/", 2)[-2] for o in listed.get("Contents", [])}
        assert "checkpoint_000010" in keys, sorted(keys)

        # The worker gets no API credentials at all.
        worker = cluster.core.read_namespaced_pod(status["workerPod"], ns)
        assert worker.spec.automount_service_account_token is False
        mounts = [m.mount_path for c in worker.spec.containers for m in c.volume_mounts or []]
        assert "/var/run/secrets/kubernetes.io/serviceaccount" not in mounts

        # The installed operator ran this job to its end, the worker's progress
        # reports reached it (each checked with a TokenReview, which its RBAC
        # allows), and nothing it did was refused by RBAC.
        handled = f"[{ns}/{JOB}] Running -> Succeeded"
        assert handled in op_logs, op_logs[-4000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        accepted = re.search(
            r'kubetune_progress_reports_total\{outcome="accepted"\} (\S+)', metrics
        )
        assert accepted and float(accepted.group(1)) > 0, metrics[-3000:]
        forbidden = [line for line in op_logs.splitlines() if FORBIDDEN.search(line)]
        assert not forbidden, "\n".join(forbidden[:20])

        helm(cluster, "uninstall", release, "-n", ns, "--wait", "--timeout=120s")
        installed = False
        wait_for(
            "the operator pod to go after helm uninstall",
            lambda: not operator_pods(cluster, ns, release),
            timeout=120,
        )
        # The process itself is gone too, not just the Pod object.
        wait_for(
            "the operator's liveness endpoint to stop answering",
            lambda: not healthz(health_port),
            timeout=30,
        )
        leftover = cluster.kubectl("get", f"clusterrole/{release}", check=False)
        assert leftover.returncode != 0, "helm uninstall left the ClusterRole behind"
    finally:
        if installed:
            helm(cluster, "uninstall", release, "-n", ns, check=False)
