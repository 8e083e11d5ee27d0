"""The Helm chart lints, renders what a golden file records, grants the operator
only what it needs, and its rendered manifests pass the real API server's
validation (`kubectl apply --dry-run=server`).

Set KUBETUNE_UPDATE_GOLDEN=1 to rewrite tests/e2e/golden/chart-default.yaml
after an intended change, then review the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_fixtures import STATE

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubetune"
GOLDEN = Path(__file__).parent / "golden" / "chart-default.yaml"
HELM = Path(os.environ.get("HELM") or STATE / "bin" / "helm")
RELEASE, RELEASE_NS = "kubetune", "kubetune-system"


def helm(*args: str) -> str:
    if not HELM.exists():
        pytest.skip(f"helm not found at {HELM}: run make cluster-up (or set HELM)")
    proc = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def render(
    *sets: str,
    namespace: str = RELEASE_NS,
    crds: bool = False,
    release: str = RELEASE,
    tests: bool = False,
) -> str:
    """`helm template`; `helm test`'s hooks only when asked (they are no part
    of what `helm install` creates)."""
    flags = [f"--set={s}" for s in sets] + (["--include-crds"] if crds else [])
    flags += [] if tests else ["--skip-tests"]
    return helm("template", release, str(CHART), "--namespace", namespace, *flags)


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_lint() -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "--set=watchNamespaces={team-a,team-b}")


def test_default_render_matches_golden() -> None:
    text = render()
    if os.environ.get("KUBETUNE_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    assert GOLDEN.exists(), "no golden file yet: run with KUBETUNE_UPDATE_GOLDEN=1"
    assert text == GOLDEN.read_text(encoding="utf-8"), (
        "the rendered chart changed: if intended, rerun with KUBETUNE_UPDATE_GOLDEN=1"
    )


def test_operator_deployment() -> None:
    (deploy,) = [d for d in documents(render()) if d["kind"] == "Deployment"]
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}  # kopf peering is not leader election
    (container,) = spec["template"]["spec"]["containers"]
    assert container["command"] == ["kubetune-operator"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WATCH_NAMESPACE"] == ""
    assert env["KUBETUNE_WORKER_IMAGE"] == "kubetune:0.1.0"
    assert spec["template"]["spec"]["serviceAccountName"] == RELEASE
    (deploy,) = [
        d
        for d in documents(render("watchNamespaces={a,b}", "workerImage=me/worker:1"))
        if d["kind"] == "Deployment"
    ]
    env = {
        e["name"]: e.get("value")
        for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["WATCH_NAMESPACE"] == "a,b"
    assert env["KUBETUNE_WORKER_IMAGE"] == "me/worker:1"


def rules_of(docs: list[dict[str, Any]], kind: str) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs of every rule in every object of `kind`."""
    out: dict[tuple[str, str], set[str]] = {}
    for doc in docs:
        if doc["kind"] != kind:
            continue
        for rule in doc["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


NAMESPACED_RULES = {
    ("kubetune.io", "trainablejobs"): {"get", "list", "watch", "create", "patch"},
    ("kubetune.io", "trainablejobs/status"): {"get", "patch", "update"},
    ("kubetune.io", "trainablesweeps"): {"get", "list", "watch"},
    ("kubetune.io", "trainablesweeps/status"): {"get", "patch", "update"},
    ("", "pods"): {"get", "list", "watch", "create", "delete"},
    ("", "secrets"): {"get"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
CLUSTER_RULES = {
    ("", "namespaces"): {"list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("authentication.k8s.io", "tokenreviews"): {"create"},
}


def test_rbac_is_least_privilege() -> None:
    docs = documents(render())
    assert rules_of(docs, "ClusterRole") == CLUSTER_RULES | NAMESPACED_RULES
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]
    for rules in rules_of(docs, "ClusterRole").values():
        assert "*" not in rules


def test_rbac_per_namespace_when_the_namespaces_are_named() -> None:
    docs = documents(render("watchNamespaces={team-a,team-b}"))
    assert rules_of(docs, "ClusterRole") == CLUSTER_RULES
    roles = [d for d in docs if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert rules_of(roles, "Role") == NAMESPACED_RULES
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    # A glob cannot name Roles: it falls back to cluster-wide rights.
    docs = documents(render("watchNamespaces={team-*}"))
    assert rules_of(docs, "ClusterRole") == CLUSTER_RULES | NAMESPACED_RULES


KUEUE_NAMESPACED = {
    ("kueue.x-k8s.io", "workloads"): {"get", "list", "watch", "create", "delete", "patch"},
    ("kueue.x-k8s.io", "workloads/status"): {"get", "update", "patch"},
}
KUEUE_CLUSTER = {("kueue.x-k8s.io", "resourceflavors"): {"get"}}
KUEUE_CLUSTER[("kueue.x-k8s.io", "workloadpriorityclasses")] = {"get"}


def test_kueue_support_adds_its_rbac_and_flag_only_when_enabled() -> None:
    docs = documents(render("kueue.enabled=true"))
    assert rules_of(docs, "ClusterRole") == (
        CLUSTER_RULES | NAMESPACED_RULES | KUEUE_NAMESPACED | KUEUE_CLUSTER
    )
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {
        e["name"]: e.get("value")
        for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KUBETUNE_KUEUE"] == "1"
    roles = documents(render("kueue.enabled=true", "watchNamespaces={team-a}"))
    assert rules_of(roles, "Role") == NAMESPACED_RULES | KUEUE_NAMESPACED
    bad = subprocess.run(
        [str(HELM), "template", "t", str(CHART), "--set-string=kueue.enabled=yes"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "kueue" in bad.stderr, bad.stderr


def test_chart_crd_is_the_repo_crd() -> None:
    docs = documents(render(crds=True))
    crds = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}
    sources = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("*.yaml"))]
    assert crds == {s["metadata"]["name"]: s for s in sources}
    assert set(crds) == {"trainablejobs.kubetune.io", "trainablesweeps.kubetune.io"}


def test_server_accepts_the_rendered_chart(cluster: Any, namespace: str) -> None:
    for sets in ((), (f"watchNamespaces={{{namespace}}}",)):
        text = render(*sets, namespace=namespace, crds=True)
        proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=text, check=False)
        assert proc.returncode == 0, f"{sets}: {proc.stderr}"
        kinds = (
            "deployment.apps",
            "service",
            "serviceaccount",
            "clusterrole.rbac.authorization.k8s.io",
        )
        for kind in kinds:
            assert f"{kind}/" in proc.stdout, proc.stdout
        if sets:
            created = proc.stdout.splitlines()
            assert any(line.startswith("role.rbac.authorization.k8s.io/") for line in created)


def test_operator_account_can_do_its_job_and_no_more(cluster: Any, namespace: str) -> None:
    # The namespaced variant: its cluster-wide part is small and named after the release.
    release = f"rbac-{namespace}"[:40]
    text = render(f"watchNamespaces={{{namespace}}}", namespace=namespace, release=release)
    rbac = "\n---\n".join(yaml.safe_dump(d) for d in documents(text) if d["kind"] != "Deployment")
    cluster.kubectl("apply", "-f", "-", input=rbac)
    try:
        (account,) = [d for d in documents(text) if d["kind"] == "ServiceAccount"]
        user = f"system:serviceaccount:{namespace}:{account['metadata']['name']}"

        def can(*args: str) -> bool:
            proc = cluster.kubectl("auth", "can-i", f"--as={user}", *args, check=False)
            return proc.stdout.strip() == "yes"

        here = ("-n", namespace)
        allowed = [
            ("watch", "trainablejobs.kubetune.io", *here),
            ("create", "trainablejobs.kubetune.io", *here),
            ("watch", "trainablesweeps.kubetune.io", *here),
            ("update", "trainablesweeps.kubetune.io", "--subresource=status", *here),
            ("patch", "trainablejobs.kubetune.io", *here),
            ("update", "trainablejobs.kubetune.io", "--subresource=status", *here),
            ("create", "pods", *here),
            ("delete", "pods", *here),
            ("get", "secrets", *here),
            ("create", "events", *here),
            ("create", "events.events.k8s.io", *here),
            ("list", "namespaces"),
            ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
            ("create", "tokenreviews.authentication.k8s.io"),
        ]
        denied = [
            ("list", "secrets", *here),  # only the Secret a job names, by name
            ("delete", "trainablejobs.kubetune.io", *here),
            ("update", "trainablejobs.kubetune.io", *here),  # never replaces a job
            ("patch", "trainablesweeps.kubetune.io", *here),  # never writes a sweep's spec
            ("create", "pods", "--subresource=exec", *here),
            ("create", "deployments.apps", *here),
            ("get", "pods", "-n", "default"),  # another namespace
            ("get", "secrets", "-n", "default"),
        ]
        assert [a for a in allowed if not can(*a)] == []
        assert [d for d in denied if can(*d)] == []
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=rbac, check=False)


SERVICE_MONITOR_CRD = Path(__file__).parent / "fixtures" / "servicemonitor-crd.yaml"
DASHBOARD = CHART / "dashboards" / "kubetune.json"


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return [d["kind"] for d in docs]


def test_metrics_service_and_optional_service_monitor() -> None:
    docs = documents(render())
    assert "ServiceMonitor" not in kinds(docs)
    (service,) = [d for d in docs if d["kind"] == "Service"]
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["metrics"]["port"] == 8471 and ports["metrics"]["targetPort"] == "metrics"

    docs = documents(
        render(
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.labels.release=prometheus",
            "metrics.serviceMonitor.interval=1m",
        )
    )
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    spec = monitor["spec"]
    # It selects the chart's Service (and only it) and scrapes its `metrics` port.
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert selector["app.kubernetes.io/instance"] == RELEASE
    assert spec["namespaceSelector"] == {"matchNames": [RELEASE_NS]}
    assert spec["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "1m", "scrapeTimeout": "10s"}
    ]
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


def test_dashboard_configmap_carries_the_dashboard_file() -> None:
    assert "ConfigMap" not in kinds(documents(render()))
    docs = documents(render("metrics.dashboard.enabled=true"))
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["kubetune.json"]) == json.loads(DASHBOARD.read_text())
    docs = documents(
        render(
            "metrics.dashboard.enabled=true",
            "metrics.dashboard.namespace=monitoring",
            "metrics.dashboard.annotations.grafana_folder=kubetune",
        )
    )
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "kubetune"}


@pytest.mark.parametrize(
    ("flag", "field", "why"),
    [
        ("--set-string=metrics.port=http", "/metrics/port", "want integer"),
        ("--set=metrics.serviceMonitor.enabled=yes", "/metrics/serviceMonitor/enabled", "boolean"),
        ("--set=metrics.serviceMonitor.enabeld=true", "/metrics/serviceMonitor", "'enabeld'"),
        ("--set=metrics.serviceMonitor.interval=30 seconds", "/metrics/serviceMonitor/interval",
         "pattern"),
        ("--set=helmTest.storage.uri=/var/data", "/helmTest/storage/uri", "pattern"),
        ("--set=helmTest.timeoutSeconds=5", "/helmTest/timeoutSeconds", "minimum"),
    ],
    ids=["port-type", "enabled-type", "typo", "duration", "s3-uri", "timeout"],
)  # fmt: skip
def test_schema_refuses_bad_values_naming_the_field(flag: str, field: str, why: str) -> None:
    if not HELM.exists():
        pytest.skip(f"helm not found at {HELM}: run make cluster-up (or set HELM)")
    proc = subprocess.run(
        [str(HELM), "template", "t", str(CHART), flag], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0, f"{flag} was accepted"
    assert f"at '{field}'" in proc.stderr and why in proc.stderr, proc.stderr


def test_helm_test_pod_has_only_the_rights_it_needs() -> None:
    assert not [d for d in documents(render()) if d["kind"] == "Pod"]
    docs = documents(
        render("helmTest.storage.uri=s3://bucket/prefix", "helmTest.namespace=jobs", tests=True)
    )
    hooks = [d for d in docs if (d["metadata"].get("annotations") or {}).get("helm.sh/hook")]
    assert sorted(kinds(hooks)) == ["Pod", "Role", "RoleBinding", "ServiceAccount"]
    for hook in hooks:
        annotations = hook["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "test"
        # Removed once it passed, kept for `kubectl logs` when it failed.
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert hook["metadata"]["namespace"] == "jobs"
    assert rules_of(hooks, "Role") == {
        ("kubetune.io", "trainablejobs"): {"get", "list", "watch", "create", "delete"}
    }
    (pod,) = [d for d in hooks if d["kind"] == "Pod"]
    (account,) = [d for d in hooks if d["kind"] == "ServiceAccount"]
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert pod["spec"]["restartPolicy"] == "Never"
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["STORAGE_URI"] == "s3://bucket/prefix" and env["JOB_NAMESPACE"] == "jobs"
    # The hooks are not part of the release's own objects.
    assert not [d for d in docs if d["kind"] == "Role" and d not in hooks]


def test_server_accepts_the_service_monitor_and_dashboard(cluster: Any, namespace: str) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(SERVICE_MONITOR_CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com",
        "--timeout=60s",
    )  # fmt: skip
    try:
        text = render(
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.labels.release=prometheus",
            "metrics.dashboard.enabled=true",
            f"watchNamespaces={{{namespace}}}",
            namespace=namespace,
        )
        # Created for real (not a dry run): the API server keeps what it accepted.
        extra = [d for d in documents(text) if d["kind"] in ("ServiceMonitor", "ConfigMap")]
        assert sorted(kinds(extra)) == ["ConfigMap", "ServiceMonitor"]
        body = "\n---\n".join(yaml.safe_dump(d) for d in extra)
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=body)
        got = json.loads(
            cluster.kubectl("-n", namespace, "get", "servicemonitor", "-o", "json").stdout
        )
        (monitor,) = got["items"]
        assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
        # A misspelt field is refused by the server, so the check above means something.
        (bad,) = [d for d in extra if d["kind"] == "ServiceMonitor"]
        bad["spec"]["endpoints"][0]["intervall"] = "30s"
        bad["metadata"]["name"] = "misspelt"
        proc = cluster.kubectl(
            "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(bad), check=False
        )
        assert proc.returncode != 0 and "intervall" in proc.stderr, proc.stderr
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "-f", str(SERVICE_MONITOR_CRD), check=False)
