"""The node agent's API layer turns an apiserver that is away into a KubeError,
the one error its heartbeat and pod workers retry (an uncaught transport error
once killed the heartbeat and failed every pod during an apiserver restart)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # localcluster lives at the repo root, outside the package dirs
    sys.path.insert(0, str(REPO))

from localcluster.components import build_kubeconfig  # noqa: E402
from localcluster.nodeagent.kube import Kube, KubeError  # noqa: E402


def test_an_apiserver_that_is_away_is_a_kube_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    ca = tmp_path / "ca.crt"
    ca.write_text("")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(build_kubeconfig(f"https://127.0.0.1:{port}", ca, "token"))
    kube = Kube(str(kubeconfig))
    with pytest.raises(KubeError) as info:
        kube.get("/api/v1/nodes")
    assert info.value.status == 0
    assert "Unreachable" in str(info.value)
