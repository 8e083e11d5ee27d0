"""The Helm chart lints, renders what a golden file records, grants the operator
only what it needs, and its rendered manifests pass the real API server's
validation (`kubectl apply --dry-run=server`).

Set KUBETUNE_UPDATE_GOLDEN=1 to rewrite tests/e2e/golden/chart-default.yaml
after an intended change, then review the diff.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubetune"
GOLDEN = Path(__file__).parent / "golden" / "chart-default.yaml"
HELM = Path(os.environ.get("HELM") or REPO / ".cluster" / "bin" / "helm")
RELEASE, RELEASE_NS = "kubetune", "kubetune-system"


def helm(*args: str) -> str:
    if not HELM.exists():
        pytest.skip(f"helm not found at {HELM}: run make cluster-up (or set HELM)")
    proc = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def render(
    *sets: str, namespace: str = RELEASE_NS, crds: bool = False, release: str = RELEASE
) -> str:
    flags = [f"--set={s}" for s in sets] + (["--include-crds"] if crds else [])
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
