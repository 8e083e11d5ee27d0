"""What every pod worker of the node agent shares: the API client, each node's
GPUs (handed to pods and taken back), the paths and settings, the stop flag,
and the environment every container starts from."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from localcluster.nodeagent.kube import Kube


class GpuPool:
    """The GPU ids 0..N-1 of one node, handed to pods and taken back when they end."""

    def __init__(self, count: int) -> None:
        self._free = list(range(count))
        self._lock = threading.Lock()

    def take(self, count: int) -> list[int] | None:
        with self._lock:
            if count > len(self._free):
                return None
            taken, self._free = self._free[:count], self._free[count:]
            return taken

    def give(self, ids: list[int]) -> None:
        with self._lock:
            self._free = sorted(set(self._free) | set(ids))


@dataclass
class Runtime:
    """What every pod worker shares: the API, the node's GPUs, paths and settings."""

    kube: Kube
    state: Path
    repo: Path
    apiserver_port: int
    gpus: dict[str, GpuPool]
    backoff_s: float = 10.0
    stopping: threading.Event = field(default_factory=threading.Event)

    def base_env(self, pod_name: str) -> dict[str, str]:
        venv = self.repo / ".venv" / "bin"
        return {
            "PATH": f"{venv}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "HOSTNAME": pod_name,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }

    def service_env(self) -> dict[str, str]:
        port = str(self.apiserver_port)
        return {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
        }
