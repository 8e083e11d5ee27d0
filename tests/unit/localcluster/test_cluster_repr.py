"""The tests' view of the local cluster never shows the S3 secret key: pytest
prints a fixture's repr with every failure, and CI keeps that output."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # localcluster lives at the repo root, outside the package dirs
    sys.path.insert(0, str(REPO))

from localcluster.testing import Cluster  # noqa: E402


def test_repr_leaves_out_the_credentials() -> None:
    key = "fake-secret-key-0123456789abcdef"
    s3_env = {"AWS_ACCESS_KEY_ID": "kubetune", "AWS_SECRET_ACCESS_KEY": key}
    cluster = Cluster(
        repo=REPO,
        kubeconfig=REPO / ".cluster" / "kubeconfig",
        kubectl_path=REPO / ".cluster" / "bin" / "kubectl",
        helm_path=None,
        s3_env=s3_env,
        env={"PATH": "/usr/bin", **s3_env},
        api=None,  # type: ignore[arg-type]
    )
    shown = repr(cluster)
    assert key not in shown and "kubeconfig" in shown
