"""The chart's life on the real local cluster, from the previous release on:
`helm install` of the 0.1.0 chart (kept packaged in tests/e2e/fixtures, so no
git history is needed), a job running, `helm upgrade` to the chart here while
it runs, the documented CRD step applying the new CRDs, `helm test`'s smoke
job, and `helm uninstall` keeping the CRDs, the jobs and their data in S3.
The release and its namespace are chart_fixtures' `chart_release`.
"""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_fixtures import CHART, ChartRelease, helm, operator_pods
from operator_fixtures import BUCKET, SECRET, cluster_env, report_figure

from localcluster.testing import Cluster, wait_for

pytestmark = pytest.mark.e2e

PREVIOUS = Path(__file__).parent / "fixtures" / "kubetune-0.1.0.tgz"
JOB = "through-upgrade"
ITERATIONS = 120


def chart_version(cluster: Cluster, chart: str) -> str:
    return str(yaml.safe_load(helm(cluster, "show", "chart", chart).stdout)["version"])


def apply_chart_crds(cluster: Cluster, chart: str) -> None:
    """The upgrade step the chart documents: Helm never upgrades crds/."""
    crds = helm(cluster, "show", "crds", chart).stdout
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crds)


def printer_columns(cluster: Cluster) -> list[str]:
    crd = json.loads(
        cluster.kubectl("get", "crd", "trainablejobs.kubetune.io", "-o", "json").stdout
    )
    (version,) = crd["spec"]["versions"]
    return [c["name"] for c in version["additionalPrinterColumns"]]


def chart_printer_columns(cluster: Cluster, chart: str) -> list[str]:
    for doc in yaml.safe_load_all(helm(cluster, "show", "crds", chart).stdout):
        if doc and doc["metadata"]["name"] == "trainablejobs.kubetune.io":
            (version,) = doc["spec"]["versions"]
            return [c["name"] for c in version["additionalPrinterColumns"]]
    raise AssertionError(f"{chart} has no TrainableJob CRD")


def get_job(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("-n", ns, "get", "tj", name, "-o", "json").stdout))


def status_of(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return dict(get_job(cluster, ns, name).get("status") or {})


def run_keys(s3: Any, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def scrape_jobs_gauge(port: int, ns: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    pattern = rf'^kubetune_jobs\{{namespace="{re.escape(ns)}",phase="(\w+)"\}} (\S+)$'
    return {m.group(1): float(m.group(2)) for m in re.finditer(pattern, text, re.MULTILINE)}


def test_helm_upgrade_from_the_previous_chart_with_a_job_running(
    cluster: Cluster, chart_release: ChartRelease, s3: Any
) -> None:
    ns, release = chart_release.namespace, chart_release.name
    assert chart_version(cluster, str(PREVIOUS)) == "0.1.0"
    assert chart_version(cluster, CHART) != "0.1.0"
    # A cluster that ran 0.1.0 has 0.1.0's CRDs (Helm installs crds/ only when missing).
    apply_chart_crds(cluster, str(PREVIOUS))
    new_columns = chart_printer_columns(cluster, CHART)
    assert printer_columns(cluster) == chart_printer_columns(cluster, str(PREVIOUS))
    assert printer_columns(cluster) != new_columns, "the CRD did not change since 0.1.0"

    metrics_port = chart_release.metrics_port
    chart_release.install(str(PREVIOUS), "--wait", "--timeout=120s")
    try:
        deploy = f"deployment/{release}"
        cluster.kubectl(
            "-n", ns, "create", "secret", "generic", SECRET,
            f"--from-literal=AWS_ACCESS_KEY_ID={cluster.s3_env['AWS_ACCESS_KEY_ID']}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={cluster.s3_env['AWS_SECRET_ACCESS_KEY']}",
        )  # fmt: skip
        run_prefix = f"upgrade-{uuid.uuid4().hex[:8]}"
        storage = {
            "uri": f"s3://{BUCKET}/{run_prefix}",
            "endpointURL": cluster_env()["AWS_ENDPOINT_URL"],
            "secretRef": {"name": SECRET},
        }
        job = {
            "apiVersion": "kubetune.io/v1alpha1",
            "kind": "TrainableJob",
            "metadata": {"name": JOB},
            "spec": {
                "trainable": "tests.e2e.trainables:Counter",
                "config": {"sleep": 0.25},
                "stop": {"training_iteration": ITERATIONS},
                "checkpoint": {"frequency": 10},
                "storage": storage,
            },
        }
        cluster.apply(yaml.safe_dump(job), ns)
        wait_for(
            "the job to run under the 0.1.0 operator",
            lambda: int(status_of(cluster, ns, JOB).get("iteration") or 0) >= 10,
            timeout=120,
        )
        before = status_of(cluster, ns, JOB)
        [old_operator] = operator_pods(cluster, ns, release)

        # The upgrade: 0.1.0's values kept, the new chart's new values at their
        # defaults. verbose=true changes the operator's pod, as a new image
        # would: the operator is replaced while the job runs.
        helm(
            cluster, "upgrade", release, CHART, "-n", ns, "--reset-then-reuse-values",
            "--set", f"verbose=true,helmTest.storage.uri=s3://{BUCKET}/{run_prefix}-smoke,"
            f"helmTest.storage.endpointURL={cluster_env()['AWS_ENDPOINT_URL']},"
            f"helmTest.storage.secretName={SECRET}",
            "--wait", "--timeout=180s",
        )  # fmt: skip
        apply_chart_crds(cluster, CHART)
        assert printer_columns(cluster) == new_columns
        cluster.kubectl(
            "-n", ns, "wait", "--for=condition=Available", deploy, "--timeout=120s", timeout=150
        )
        [new_operator] = operator_pods(cluster, ns, release)
        assert new_operator.metadata.uid != old_operator.metadata.uid
        history = json.loads(helm(cluster, "history", release, "-n", ns, "-o", "json").stdout)
        assert [h["chart"] for h in history] == ["kubetune-0.1.0", "kubetune-0.2.0"]

        # The job went on through the operator's replacement: the same worker
        # pod, no failure, no preemption, and status still moving.
        during = status_of(cluster, ns, JOB)
        assert during.get("phase") == "Running", during
        assert during["workerPod"] == before["workerPod"]
        wait_for(
            "the new operator to write the job's progress",
            lambda: (
                int(status_of(cluster, ns, JOB).get("iteration") or 0)
                > int(during.get("iteration") or 0)
            ),
            timeout=60,
        )
        # The new operator's metrics count the job (the chart's metrics port).
        wait_for(
            "the new operator's metrics",
            lambda: scrape_jobs_gauge(metrics_port, ns).get("Running") == 1,
            timeout=60,
        )
        cluster.kubectl(
            "-n", ns, "wait", "--for=condition=Complete", f"tj/{JOB}", "--timeout=180s",
            timeout=200,
        )  # fmt: skip
        done = status_of(cluster, ns, JOB)
        assert done["phase"] == "Succeeded"
        assert done["workerPod"] == before["workerPod"]
        assert done.get("failures", 0) == 0 and done.get("preemptions", 0) == 0
        assert done["latestCheckpoint"]["iteration"] == ITERATIONS
        # Nothing lost: every iteration's result is in S3, once, in order.
        folder = f"{run_prefix}/{ns}/{JOB}"
        body = s3.get_object(Bucket=BUCKET, Key=f"{folder}/result.json")["Body"].read()
        iterations = [json.loads(line)["training_iteration"] for line in body.splitlines()]
        assert iterations == list(range(1, ITERATIONS + 1))
        # `kubectl get -o wide` shows the column the new CRD added.
        wide = cluster.kubectl("-n", ns, "get", "tj", JOB, "-o", "wide").stdout
        assert "BEST" in wide.splitlines()[0], wide
        report_figure(
            f"chart upgrade 0.1.0 -> 0.2.0: job went from iteration {before['iteration']} "
            f"to {ITERATIONS} on worker pod {done['workerPod']} (0 failures, 0 preemptions), "
            f"CRD columns {len(new_columns)}"
        )

        # `helm test`: the smoke job runs and passes; its hooks are cleaned up.
        tested = helm(cluster, "test", release, "-n", ns, "--timeout=300s", check=False)
        smoke = f"{release}-smoke"
        if tested.returncode != 0:
            logs = cluster.kubectl("-n", ns, "logs", smoke, check=False)
            pytest.fail(f"helm test failed: {tested.stderr}\n{tested.stdout}\n{logs.stdout}")
        assert re.search(rf"TEST SUITE:\s+{smoke}", tested.stdout), tested.stdout
        assert re.search(r"Phase:\s+Succeeded", tested.stdout), tested.stdout
        left = cluster.kubectl(
            "-n", ns, "get", "pod,sa,role,rolebinding,tj", "-o", "name", check=False
        ).stdout.split()
        assert not [n for n in left if n.endswith(f"/{smoke}")], left

        # Uninstall: the operator goes; the CRDs, the job and its data stay.
        keys = run_keys(s3, f"{run_prefix}/")
        chart_release.uninstall("--wait", "--timeout=120s")
        wait_for(
            "the operator pod to go after helm uninstall",
            lambda: not operator_pods(cluster, ns, release),
            timeout=120,
        )
        for crd in ("trainablejobs.kubetune.io", "trainablesweeps.kubetune.io"):
            cluster.kubectl("get", "crd", crd)
        assert status_of(cluster, ns, JOB)["phase"] == "Succeeded"
        assert run_keys(s3, f"{run_prefix}/") == keys
        assert cluster.kubectl("-n", ns, "get", "secret", SECRET, check=False).returncode == 0
    finally:
        # Leave the repo's CRDs in place for the tests after this one (the release,
        # if still installed, is uninstalled by chart_release: Helm keeps CRDs).
        cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(cluster.repo / "crds")
        )
