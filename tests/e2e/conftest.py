"""Fixtures of the end-to-end tests: the real local cluster (reused when it is
up and healthy, else started with `python -m localcluster up`), a fresh
namespace per test, kubectl and official-client helpers, and the S3 settings.

Every test under tests/e2e is marked `e2e`.
"""

# The typed client takes models and marks every field Optional; these tests pass
# manifests as dicts (the client validates them) and read fields the API always sets.
# mypy: disable-error-code="arg-type,union-attr,index"

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import config
from kubernetes.client.rest import ApiException

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # localcluster lives at the repo root, outside the package dirs
    sys.path.insert(0, str(REPO))

from evidence import EvidenceKeeper, keep_evidence  # noqa: E402

from localcluster.cluster import healthy  # noqa: E402
from localcluster.config import Layout  # noqa: E402
from localcluster.testing import Cluster, read_env_file  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def _start_cluster(lay: Layout) -> None:
    from localcluster.artifacts import missing_binaries

    if missing_binaries(lay):
        pytest.fail(
            "the local cluster is not built yet: run `make cluster-up` first "
            "(a cold build takes 10-30 minutes)"
        )
    proc = subprocess.run(
        [sys.executable, "-m", "localcluster", "up"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"`python -m localcluster up` failed: {proc.stderr.strip() or proc.stdout}")


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    lay = Layout.discover()
    if not healthy(lay):
        _start_cluster(lay)
    env_vars = read_env_file(lay.env_file)
    s3_keys = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    s3_env = {k: env_vars[k] for k in (*s3_keys, "AWS_DEFAULT_REGION")}
    helm = lay.bin / "helm"
    return Cluster(
        repo=REPO,
        kubeconfig=lay.kubeconfig,
        kubectl_path=lay.bin / "kubectl",
        helm_path=helm if helm.exists() else None,
        s3_env=s3_env,
        env={**os.environ, **env_vars},
        api=config.new_client_from_config(config_file=str(lay.kubeconfig)),
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40].strip("-")


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace (with its default service account ready), deleted afterwards."""
    name = f"{_slug(request.node.name)}-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(name)
    yield name
    # Deletion goes on in the background: pods there still get their grace period.
    try:
        cluster.core.delete_namespace(name)
    except ApiException as err:
        if err.status != 404:
            raise


@pytest.fixture(scope="session", autouse=True)
def evidence() -> Iterator[EvidenceKeeper]:
    """Keeps every pod log, event, job status and Secret value of the run for
    the secret-leak check that ends it (test_zz_secret_leaks.py)."""
    yield from keep_evidence(Layout.discover().state)


# The chart's fixtures (a `kubetune-helm-*` namespace, a release of the chart installed in it)
# and the operator's (CRD, operator process, S3 bucket, per-test namespace with credentials).
from chart_fixtures import chart_release, helm_ns  # noqa: E402, F401
from operator_fixtures import crd_installed, job_ns, operator, s3  # noqa: E402, F401


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from operator_fixtures import FIGURES

    if FIGURES:
        terminalreporter.section("kubetune figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
