"""`up` checks the cluster's ports after it stopped a stale cluster: a listener
that closes a moment late is waited for (issue: port 7443 "in use by an unknown
process" right after a stale clean-up), one that stays is named, after a bound."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # localcluster lives at the repo root, outside the package dirs
    sys.path.insert(0, str(REPO))

from localcluster.artifacts import SetupError  # noqa: E402
from localcluster.cluster import _check_ports  # noqa: E402
from localcluster.config import Layout, NodeSpec, Ports  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def layout(tmp_path: Path, apiserver: int) -> Layout:
    # Every other port far from anything a test machine listens on.
    base = free_port()
    ports = Ports(
        etcd_client=base + 1, etcd_peer=base + 2, apiserver=apiserver,
        controller_manager=base + 3, scheduler=base + 4, s3=base + 5, kubelet_base=base + 6,
    )  # fmt: skip
    return Layout(repo=tmp_path, cache=tmp_path / "cache", state=tmp_path / "state", ports=ports)


def listen(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def test_a_listener_that_closes_late_is_waited_for(tmp_path: Path) -> None:
    port = free_port()
    held = listen(port)
    threading.Timer(0.8, held.close).start()
    started = time.monotonic()
    _check_ports(layout(tmp_path, port), [NodeSpec("n", 0)], settle_s=10)
    assert 0.5 < time.monotonic() - started < 10


def test_a_listener_that_stays_is_named_after_the_bound(tmp_path: Path) -> None:
    port = free_port()
    with listen(port):
        started = time.monotonic()
        with pytest.raises(SetupError, match=f"port {port} \\(needed by kube-apiserver\\)"):
            _check_ports(layout(tmp_path, port), [NodeSpec("n", 0)], settle_s=0.5)
        assert time.monotonic() - started >= 0.5
