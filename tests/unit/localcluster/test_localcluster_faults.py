"""The pure parts of localcluster.faults: which components a test may restart,
with the command line `up` used, and a lost node's kubelet certificate."""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # localcluster lives at the repo root, outside the package dirs
    sys.path.insert(0, str(REPO))

from localcluster.components import apiserver_argv, etcd_argv  # noqa: E402
from localcluster.config import Layout  # noqa: E402
from localcluster.faults import (  # noqa: E402
    FaultError,
    component_argv,
    stale_settings,
)
from localcluster.pki import load_ca, write_kubelet_pair, write_pki  # noqa: E402
from localcluster.procs import spawn, stop_group  # noqa: E402


@pytest.fixture
def lay(tmp_path: Path) -> Layout:
    lay = Layout(repo=REPO, cache=tmp_path / "cache", state=tmp_path / "state")
    lay.state.mkdir()
    lay.secrets_file.write_text(json.dumps({"s3_access_key": "ak", "s3_secret_key": "sk"}))
    return lay


def test_restarts_use_the_command_lines_of_up(lay: Layout) -> None:
    assert component_argv(lay, "etcd") == etcd_argv(lay)
    assert component_argv(lay, "kube-apiserver") == apiserver_argv(lay)
    s3 = component_argv(lay, "s3")
    assert "--access=ak" in s3 and "--secret=sk" in s3
    assert not any(a.startswith("--sidecar") for a in s3)
    lay.s3_sidecar.mkdir()
    assert f"--sidecar={lay.s3_sidecar}" in component_argv(lay, "s3")


@pytest.mark.parametrize("name", ["nodeagent", "kueue", "etcd2"])
def test_other_names_are_refused(lay: Layout, name: str) -> None:
    with pytest.raises(FaultError, match=f"cannot restart '{name}': choose one of etcd, s3"):
        component_argv(lay, name)


def test_a_new_nodes_certificate_is_signed_by_the_cluster_ca(lay: Layout) -> None:
    write_pki(lay.pki, ["kt-cpu"])
    now = datetime.datetime.now(datetime.timezone.utc)
    write_kubelet_pair(lay.pki, load_ca(lay.pki), now, "kt-lost")
    cert = x509.load_pem_x509_certificate((lay.pki / "kubelet-kt-lost.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((lay.pki / "ca.crt").read_bytes())
    assert cert.issuer == ca.subject
    assert cert.subject.rfc4514_string() == "O=system:nodes,CN=system:node:kt-lost"
    cert.verify_directly_issued_by(ca)
    assert (lay.pki / "kubelet-kt-lost.key").stat().st_mode & 0o077 == 0


def test_a_control_plane_started_without_the_node_loss_flags_is_named(lay: Layout) -> None:
    assert stale_settings(lay) == [
        "kube-controller-manager (not running)",
        "kube-apiserver (not running)",
    ]
    procs = []
    try:
        for name in ("kube-controller-manager", "kube-apiserver"):
            # Stand-ins with the old command lines: everything but the new flags.
            argv = [a for a in component_argv(lay, name) if "node-monitor" not in a]
            argv = [a for a in argv if "toleration-seconds" not in a]
            stand_in = [sys.executable, "-c", "import time; time.sleep(30)", *argv[1:]]
            pid = spawn(name, stand_in, logs=lay.logs, pids=lay.pids)
            procs.append(pid)
            # Right after the exec, /proc/PID/cmdline may read empty for a moment.
            deadline = time.monotonic() + 5
            while not Path(f"/proc/{pid}/cmdline").read_bytes() and time.monotonic() < deadline:
                time.sleep(0.01)
        assert stale_settings(lay) == [
            "kube-controller-manager --node-monitor-period=2s",
            "kube-controller-manager --node-monitor-grace-period=24s",
            "kube-apiserver --default-not-ready-toleration-seconds=10",
            "kube-apiserver --default-unreachable-toleration-seconds=10",
        ]
    finally:
        for pid in procs:
            stop_group(pid, grace_s=1)
