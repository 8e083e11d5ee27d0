"""Fixtures of the end-to-end tests: the real local cluster (reused when it is
up and healthy, else started with `python -m localcluster up`), a fresh
namespace per test, kubectl and official-client helpers, and the S3 settings.

Every test under tests/e2e is marked `e2e`. `make e2e` (hack/e2e.sh) runs
two phases side by side: in parallel (pytest-xdist, `-m "not serial"`) on the
repo's cluster, each worker with namespaces and operators of its own, and,
one at a time on a second cluster of their own, the tests marked `serial`
here: those that disturb a whole cluster (restarting the control plane,
losing a node, stopping S3, replacing the CRDs, a third cluster beside).
The secret-leak scan ends the serial phase, and runs again over the repo's
cluster after both. Modules whose pods hold GPUs share one xdist group, run
one test after the other in one worker: the cluster has three GPUs, and
their tests count on finding them free.
"""

# The typed client takes models and marks every field Optional; these tests pass
# manifests as dicts (the client validates them) and read fields the API always sets.
# mypy: disable-error-code="arg-type,union-attr,index"

from __future__ import annotations

import os
import re
import shutil
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

from evidence import EvidenceKeeper  # noqa: E402
from operator_fixtures import FIGURES, NAMESPACE_PREFIX, reported_figures  # noqa: E402

from localcluster.cluster import healthy  # noqa: E402
from localcluster.config import Layout  # noqa: E402
from localcluster.testing import Cluster, read_env_file  # noqa: E402

# Modules that disturb the whole cluster, or read all of it: run alone.
SERIAL_MODULES = frozenset(
    {
        "test_chaos_control_plane",  # restarts the API server and etcd
        "test_chaos_node",  # taints and loses a node
        "test_chaos_s3",  # stops the S3 server
        "test_chart_upgrade",  # applies the previous release's CRDs
        "test_cluster_up",  # a second cluster beside this one
        "test_zz_secret_leaks",  # scans every log of the cluster's run: last
    }
)
# Modules whose pods hold GPUs: one after the other, in one worker.
GPU_MODULES = frozenset(
    {
        "test_cluster_gpus",
        "test_crd_validation",
        "test_fuzz_manifests",
        "test_kueue",
        "test_operator_lifecycle",
        "test_pytorch_example",
    }
)
# Modules with a module-scoped fixture of their own: their tests in one worker.
GROUPED_MODULES = frozenset({"test_operator_scale"})


# tryfirst: xdist (registered after this conftest is loaded) reads the groups
# in its own pytest_collection_modifyitems, which must come after this one.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        path = Path(str(item.fspath))
        if here not in path.parents:
            continue
        item.add_marker(pytest.mark.e2e)
        if path.stem in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)
        # With --dist loadgroup the rest go one test at a time to whichever
        # worker is free.
        if path.stem in GPU_MODULES:
            item.add_marker(pytest.mark.xdist_group("gpu"))
        elif path.stem in GROUPED_MODULES:
            item.add_marker(pytest.mark.xdist_group(path.stem))


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
    name = f"{NAMESPACE_PREFIX}{_slug(request.node.name)}-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(name)
    yield name
    # Deletion goes on in the background: pods there still get their grace period.
    try:
        cluster.core.delete_namespace(name)
    except ApiException as err:
        if err.status != 404:
            raise


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    """In the one process that runs a phase (the xdist controller, or pytest
    alone): keep every pod log, event, job status and Secret value of the run
    for the secret-leak check that ends it (test_zz_secret_leaks.py)."""
    if _is_xdist_worker(config) or not _runs_e2e(config):
        return
    shutil.rmtree(FIGURES, ignore_errors=True)
    keeper = EvidenceKeeper(Layout.discover().state)
    keeper.start()
    config.stash[EVIDENCE] = keeper


def pytest_unconfigure(config: pytest.Config) -> None:
    keeper = config.stash.get(EVIDENCE, None)
    if keeper is not None:
        keeper.close()


def _runs_e2e(config: pytest.Config) -> bool:
    here = Path(__file__).parent
    return any(here in (Path(a).resolve(), *Path(a).resolve().parents) for a in config.args)


EVIDENCE = pytest.StashKey[EvidenceKeeper]()


@pytest.fixture(scope="session")
def evidence(request: pytest.FixtureRequest) -> EvidenceKeeper:
    keeper = request.config.stash.get(EVIDENCE, None)
    assert keeper is not None, "the evidence keeper runs in the process that runs the phase"
    return keeper


# The chart's fixtures (a `kubetune-helm-*` namespace, a release of the chart installed in it)
# and the operator's (CRD, operator process, S3 bucket, per-test namespace with credentials).
from chart_fixtures import chart_release, helm_ns  # noqa: E402, F401
from operator_fixtures import crd_installed, job_ns, operator, s3  # noqa: E402, F401


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    figures = reported_figures()
    if figures:
        terminalreporter.section("kubetune figures")
        for line in figures:
            terminalreporter.write_line(line)
