"""The Helm chart installs a working operator: `helm install` on the real local
cluster, the operator runs in its pod as its own service account (so the
chart's least-privilege RBAC is what it really gets), runs a job to the end,
and `helm uninstall` takes it away again. The release and its namespace are
chart_fixtures' `chart_release`.
"""

# The typed client marks every field Optional; these read fields the API always sets.
# mypy: disable-error-code="arg-type,union-attr"

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from typing import Any

import yaml
from chart_fixtures import CRD, JOB, ChartRelease, healthz, job_manifest, operator_pods
from operator_fixtures import BUCKET, SECRET

from localcluster.testing import Cluster, wait_for

# What an operator short of rights would log: kopf and the client both name it.
# (A bare "403" would also match a timestamp's milliseconds.)
FORBIDDEN = re.compile(r"""forbidden|\(403\)|['"]code['"]: ?403""", re.IGNORECASE)


def can_i(cluster: Cluster, sa: str, verb: str, resource: str, namespace: str | None) -> bool:
    """`kubectl auth can-i` as `sa`; `resource` may name a subresource (`kind/status`)."""
    kind, _, sub = resource.partition("/")
    where = ["-n", namespace] if namespace else ["--all-namespaces"]
    args = ["auth", "can-i", verb, kind, *where, f"--as={sa}"]
    if sub:
        args.append(f"--subresource={sub}")
    return cluster.kubectl(*args, check=False).stdout.strip() == "yes"


def test_helm_install_runs_a_job_with_least_privilege(
    cluster: Cluster, chart_release: ChartRelease, s3: Any
) -> None:
    ns, release = chart_release.namespace, chart_release.name
    health_port, metrics_port = chart_release.health_port, chart_release.metrics_port
    sa = f"system:serviceaccount:{ns}:{release}"
    chart_release.install(values="verbose=true")
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
    accepted = re.search(r'kubetune_progress_reports_total\{outcome="accepted"\} (\S+)', metrics)
    assert accepted and float(accepted.group(1)) > 0, metrics[-3000:]
    forbidden = [line for line in op_logs.splitlines() if FORBIDDEN.search(line)]
    assert not forbidden, "\n".join(forbidden[:20])

    chart_release.uninstall("--wait", "--timeout=120s")
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
