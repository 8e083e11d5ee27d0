"""How an add-on runs beside the local cluster: as a host process under a tiny
shell that ends it when the apiserver goes (so `make cluster-down` never
leaves it behind), remembered in .cluster/pids like the components, and
stopped by that record."""

from __future__ import annotations

from pathlib import Path

from localcluster.config import Layout
from localcluster.procs import recorded_pid, spawn, stop_group


def supervised(argv: list[str], apiserver_pid: int) -> list[str]:
    """`argv` under a tiny shell that ends it when the apiserver goes and that
    ends with it."""
    quoted = " ".join(_sh_quote(a) for a in argv)
    script = (
        f"{quoted} & k=$!; trap 'kill $k 2>/dev/null' TERM INT; "
        f"while kill -0 $k 2>/dev/null && kill -0 {apiserver_pid} 2>/dev/null; do sleep 2; done; "
        "kill $k 2>/dev/null; wait $k"
    )
    return ["bash", "-c", script]


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def start(
    lay: Layout,
    name: str,
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Starts add-on `name` supervised (log .cluster/logs/NAME.log, pid file
    .cluster/pids/NAME.pid); the caller has checked that the cluster is healthy."""
    apiserver = recorded_pid(lay.pids, "kube-apiserver")
    assert apiserver is not None  # healthy() checked it
    return spawn(name, supervised(argv, apiserver), logs=lay.logs, pids=lay.pids, env=env, cwd=cwd)


def stop(lay: Layout, name: str, grace_s: float) -> bool:
    """Stops add-on `name` and forgets its pid file; True if it was running."""
    pid = recorded_pid(lay.pids, name)
    if pid is not None:
        stop_group(pid, grace_s=grace_s)
    (lay.pids / f"{name}.pid").unlink(missing_ok=True)
    return pid is not None
