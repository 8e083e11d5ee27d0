"""What each ServiceAccount may do, as the API server answers
`kubectl auth can-i --list`, is exactly what the design says it needs.

The accounts: the operator's, with the RBAC the chart installs (one watched
namespace, every namespace, and Kueue on), and the worker pods' (the
namespace's `default` account: the operator sets none). NEEDS below is the one
copy of the matrix; docs/design.md shows it and a test here keeps the two
equal. Every authenticated account also gets the API server's discovery
(`get` on /api, /version ...) and reviews of its own rights; those are
BASELINE.

Last, a job cannot use a Secret of another namespace: spec.storage.secretRef
names a Secret of the job's own namespace only.
"""

# The typed client marks every field Optional; these read fields the API always sets.
# mypy: disable-error-code="arg-type,union-attr"

from __future__ import annotations

import json
import re
import secrets
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from kubernetes.client.rest import ApiException
from operator_fixtures import BUCKET, apply, get_job, job_manifest, job_pods
from secret_scan import register_secret_value

from kubetune_operator.model import JobView
from kubetune_operator.podspec import PodSettings, build_worker_pod
from kubetune_operator.storageio import CREDENTIAL_KEYS
from localcluster.testing import Cluster, wait_for


class Need(NamedTuple):
    account: str  # operator, operator with kueue.enabled, worker
    where: str  # cluster: in every namespace; watched: each watched namespace
    resource: str  # as `kubectl auth can-i --list` names it
    verbs: str
    why: str


OPERATOR, KUEUE, WORKER = "operator", "operator, kueue.enabled", "worker"
CLUSTER, WATCHED = "cluster", "watched"

NEEDS = [
    Need(OPERATOR, CLUSTER, "namespaces", "list watch", "kopf finds the namespaces it watches"),
    Need(OPERATOR, CLUSTER, "customresourcedefinitions.apiextensions.k8s.io", "list watch",
         "kopf notices its CRDs come and go"),
    Need(OPERATOR, CLUSTER, "tokenreviews.authentication.k8s.io", "create",
         "checks the token a worker sends with its progress"),
    Need(OPERATOR, WATCHED, "trainablejobs.kubetune.io", "create get list patch watch",
         "watches jobs; creates and patches sweep trials; patch: kopf's finalizer"),
    Need(OPERATOR, WATCHED, "trainablejobs.kubetune.io/status", "get patch update",
         "writes status (never spec)"),
    Need(OPERATOR, WATCHED, "trainablesweeps.kubetune.io", "get list watch", "watches sweeps"),
    Need(OPERATOR, WATCHED, "trainablesweeps.kubetune.io/status", "get patch update",
         "writes a sweep's status"),
    Need(OPERATOR, WATCHED, "pods", "create delete get list watch", "one worker pod per job"),
    Need(OPERATOR, WATCHED, "secrets", "get",
         "the job's storage.secretRef, to read its progress file from S3"),
    Need(OPERATOR, WATCHED, "events", "create patch", "events on jobs"),
    Need(OPERATOR, WATCHED, "events.events.k8s.io", "create patch", "events on jobs"),
    Need(KUEUE, CLUSTER, "resourceflavors.kueue.x-k8s.io", "get",
         "the node labels and tolerations of the flavor Kueue assigned"),
    Need(KUEUE, CLUSTER, "workloadpriorityclasses.kueue.x-k8s.io", "get",
         "a queued job's priority"),
    Need(KUEUE, WATCHED, "workloads.kueue.x-k8s.io", "create delete get list patch watch",
         "one Workload per queued job"),
    Need(KUEUE, WATCHED, "workloads.kueue.x-k8s.io/status", "get patch update",
         "gives the quota back when the worker is gone"),
]  # fmt: skip

# What every authenticated account gets (system:basic-user): reviews of its own rights.
BASELINE = {
    ("selfsubjectreviews.authentication.k8s.io", "create"),
    ("selfsubjectaccessreviews.authorization.k8s.io", "create"),
    ("selfsubjectrulesreviews.authorization.k8s.io", "create"),
}

Rights = set[tuple[str, str]]


def needed(accounts: tuple[str, ...], *wheres: str) -> Rights:
    return BASELINE | {
        (n.resource, verb)
        for n in NEEDS
        if n.account in accounts and n.where in wheres
        for verb in n.verbs.split()
    }


# `kubectl auth can-i --list`: Resources, Non-Resource URLs, Resource Names, Verbs.
ROW = re.compile(r"^(\S*)\s+\[([^\]]*)\]\s+\[([^\]]*)\]\s+\[([^\]]*)\]\s*$")


def parse_can_i_list(text: str) -> tuple[Rights, set[tuple[str, str]]]:
    """(resource, verb) pairs, and (non-resource URL, verb) pairs. A rule limited
    to resource names counts as `resource:name1,name2`."""
    rights: Rights = set()
    urls: set[tuple[str, str]] = set()
    for line in text.splitlines()[1:]:
        m = ROW.match(line)
        if not m:
            raise AssertionError(f"unexpected line from kubectl auth can-i --list: {line!r}")
        resource, url, names, verbs = m.groups()
        for verb in verbs.split():
            if resource:
                rights.add((f"{resource}:{names.replace(' ', ',')}" if names else resource, verb))
            else:
                urls.add((url, verb))
    return rights, urls


def rights_of(cluster: Cluster, account: str, namespace: str) -> Rights:
    out = cluster.kubectl("auth", "can-i", "--list", f"--as={account}", "-n", namespace)
    rights, urls = parse_can_i_list(out.stdout)
    # Non-resource URLs: discovery and health only, read-only.
    assert {verb for _, verb in urls} <= {"get"}, sorted(urls)
    return rights


def show(rights: Rights) -> str:
    return ", ".join(f"{verb} {resource}" for resource, verb in sorted(rights)) or "nothing"


def assert_rights(cluster: Cluster, account: str, namespace: str, expected: Rights) -> None:
    got = rights_of(cluster, account, namespace)
    assert got == expected, (
        f"{account} in {namespace}: more than the design says: {show(got - expected)}; "
        f"missing: {show(expected - got)}"
    )


def helm_template(cluster: Cluster, release: str, namespace: str, *sets: str) -> str:
    """The chart's ServiceAccount and RBAC objects, as `helm install` would make them."""
    assert cluster.helm_path is not None, "helm is missing: run `make cluster-up` again"
    args = [str(cluster.helm_path), "template", release, "charts/kubetune", "-n", namespace]
    for value in sets:
        args += ["--set-json", value]
    args += ["--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"]
    proc = subprocess.run(args, cwd=cluster.repo, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def chart_rbac(cluster: Cluster, namespace: str) -> Iterator[Callable[..., str]]:
    """Installs the chart's RBAC for a release in `namespace` (with the given
    `--set-json` values) and returns its account; removes it all afterwards."""
    applied: list[str] = []

    def install(*sets: str) -> str:
        release = f"kubetune-rbac-{uuid.uuid4().hex[:6]}"
        manifest = helm_template(cluster, release, namespace, *sets)
        applied.append(manifest)
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
        return f"system:serviceaccount:{namespace}:{release}"

    yield install
    for manifest in applied:
        cluster.kubectl("delete", "-n", namespace, "-f", "-", input=manifest, check=False)


def test_operator_watching_its_namespace_has_what_it_needs_there_only(
    cluster: Cluster, namespace: str, chart_rbac: Callable[..., str]
) -> None:
    account = chart_rbac(f"watchNamespaces={json.dumps([namespace])}")
    assert_rights(cluster, account, namespace, needed((OPERATOR,), CLUSTER, WATCHED))
    # Elsewhere only the cluster-wide rules: no pods, no Secrets, no jobs.
    assert_rights(cluster, account, "default", needed((OPERATOR,), CLUSTER))


def test_operator_watching_every_namespace_with_kueue(
    cluster: Cluster, namespace: str, chart_rbac: Callable[..., str]
) -> None:
    account = chart_rbac("watchNamespaces=[]", 'kueue={"enabled":true}')
    everything = needed((OPERATOR, KUEUE), CLUSTER, WATCHED)
    assert_rights(cluster, account, namespace, everything)
    assert_rights(cluster, account, "default", everything)


def test_worker_account_has_no_rights(cluster: Cluster, namespace: str) -> None:
    spec = {"trainable": "m:f", "storage": {"uri": f"s3://{BUCKET}/x"}}
    pod = build_worker_pod(JobView("rbac", namespace, "uid-1", 1, spec, {}), 1, PodSettings())
    # The API server fills in the account a worker pod runs as.
    created = cluster.core.create_namespaced_pod(namespace, pod, dry_run="All")
    account = f"system:serviceaccount:{namespace}:{created.spec.service_account_name}"
    assert created.spec.service_account_name == "default"
    assert created.spec.automount_service_account_token is False
    assert_rights(cluster, account, namespace, needed((WORKER,), CLUSTER, WATCHED))


def test_design_doc_shows_the_matrix() -> None:
    """docs/design.md's table is NEEDS, row for row."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "design.md").read_text()
    rows = [
        [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        for line in doc.splitlines()
        if line.startswith("| ") and line.count("|") == 6
    ]
    shown = [r for r in rows if r[0] in (OPERATOR, KUEUE, WORKER)]
    assert shown == [[n.account, n.where, n.resource, n.verbs, n.why] for n in NEEDS], (
        "docs/design.md's ServiceAccount table differs from NEEDS in tests/e2e/test_rbac_matrix.py"
    )


def test_a_job_cannot_use_a_secret_of_another_namespace(
    cluster: Cluster, job_ns: str, namespace: str
) -> None:
    """The Secret exists, with the right keys, but only in another namespace:
    the worker never starts (its container cannot get the values), nothing
    reaches the job's run folder, and the values appear nowhere."""
    other = f"{namespace}-other"
    cluster.create_namespace(other)
    try:
        values = {k: register_secret_value(secrets.token_hex(16)) for k in CREDENTIAL_KEYS}
        cluster.core.create_namespaced_secret(
            other, {"metadata": {"name": "foreign-s3"}, "stringData": values}
        )
        manifest = job_manifest("foreign", stop={"training_iteration": 3})
        manifest["spec"]["storage"]["secretRef"] = {"name": "foreign-s3"}
        apply(job_ns, manifest)

        def config_error() -> str | None:
            for pod in job_pods(job_ns, "foreign"):
                for status in (pod.get("status") or {}).get("containerStatuses") or []:
                    waiting = (status.get("state") or {}).get("waiting") or {}
                    if waiting.get("reason") == "CreateContainerConfigError":
                        return str(waiting.get("message"))
            return None

        message = wait_for("the worker to be refused its Secret", config_error, timeout=60)
        assert "foreign-s3" in message and "not found" in message, message
        job = get_job(job_ns, "foreign")
        status = job.get("status") or {}
        assert status.get("phase") == "Pending", status
        assert not status.get("lastResult") and not status.get("latestCheckpoint"), status
        run = job["spec"]["storage"]["uri"].removeprefix(f"s3://{BUCKET}/")
        listed = cluster.s3().list_objects_v2(Bucket=BUCKET, Prefix=f"{run}/")
        assert not listed.get("Contents"), [o["Key"] for o in listed["Contents"]]
        text = json.dumps(job) + cluster.kubectl("-n", job_ns, "get", "events", "-o", "json").stdout
        assert not any(v in text for v in values.values()), "a foreign Secret value leaked"
    finally:
        try:
            cluster.core.delete_namespace(other)
        except ApiException as err:
            if err.status != 404:
                raise
