"""The Helm chart on the real local cluster, for the tests that install it
(test_chart_install, test_chart_upgrade, test_pod_security): `helm`, a fresh
`kubetune-helm-*` namespace, and `chart_release`, one release per test
installed with the settings every such install needs here, uninstalled
afterwards.

The namespace is named `kubetune-helm-*`, which the test operator process of
the other end-to-end tests skips, so the installed operator has its jobs to
itself.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes.client.rest import ApiException
from operator_fixtures import BUCKET, HELM_NAMESPACE_PREFIX, SECRET, cluster_env

from localcluster.testing import Cluster

CHART = "charts/kubetune"
JOB = "helm-counter"
CRD = "crd/trainablejobs.kubetune.io"


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


def job_manifest(run_prefix: str) -> dict[str, Any]:
    """A short TrainableJob (JOB) writing under s3://BUCKET/<run_prefix>."""
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


@dataclass
class ChartRelease:
    """A release of the chart in its own namespace: its name says kubetune, so it
    is the full name of every object too, and the cluster-scoped ones
    (ClusterRole, binding) are this test's own."""

    cluster: Cluster
    namespace: str
    name: str
    # Pods share the host's network here: free ports keep the operator's
    # endpoints clear of anything else listening on the chart's defaults.
    health_port: int
    progress_port: int
    metrics_port: int
    installed: bool = False

    @property
    def progress_url(self) -> str:
        """No Service routing here either: workers reach the operator's own port."""
        return f"http://127.0.0.1:{self.progress_port}/v1alpha1/progress"

    def install(self, chart: str = CHART, *flags: str, values: str = "") -> None:
        """`helm install` of chart, watching this namespace only, on the free
        ports; `values` (a --set list) go before the ports."""
        ports = (
            f"livenessProbe.port={self.health_port},progress.port={self.progress_port},"
            f"metrics.port={self.metrics_port},progress.url={self.progress_url}"
        )
        helm(
            self.cluster,
            "install",
            self.name,
            chart,
            "-n",
            self.namespace,
            "--set-json",
            f"watchNamespaces={json.dumps([self.namespace])}",
            "--set",
            f"{values},{ports}" if values else ports,
            *flags,
        )
        self.installed = True

    def uninstall(self, *flags: str, check: bool = True) -> None:
        helm(self.cluster, "uninstall", self.name, "-n", self.namespace, *flags, check=check)
        self.installed = False


@pytest.fixture
def chart_release(cluster: Cluster, helm_ns: str) -> Iterator[ChartRelease]:
    """A release to install in a fresh `kubetune-helm-*` namespace; whatever the
    test left installed is uninstalled after it, before the namespace goes."""
    release = ChartRelease(
        cluster,
        helm_ns,
        f"kubetune-{helm_ns.removeprefix(HELM_NAMESPACE_PREFIX)}",
        health_port=free_port(),
        progress_port=free_port(),
        metrics_port=free_port(),
    )
    yield release
    if release.installed:
        release.uninstall("--wait", "--timeout=120s", check=False)
