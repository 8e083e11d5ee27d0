"""Background processes of the local cluster: start one in its own process
group with its log in .cluster/logs, remember it in .cluster/pids, find it
again, stop it, and say who holds a port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path


def start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (guards pid files against pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so split after its ")".
    return stat.rpartition(")")[2].split()[19]


def live_pids(pids_file: Path) -> Iterator[int]:
    """The pids a pod's `pids` file lists (`PID START` a line, one per process the
    node agent started) whose very process still runs: START tells a reused pid
    apart. Read as it goes, so each pid is checked just before the caller acts."""
    for line in pids_file.read_text().splitlines():
        pid_text, _, started = line.partition(" ")
        if started and pid_text.isdigit() and start_time(int(pid_text)) == started:
            yield int(pid_text)


def start_logged(
    argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Starts argv in a session of its own (a signal to ours spares it, and its
    group can be signalled whole), stdin closed, stdout and stderr appended to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    logs: Path,
    pids: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    logs.mkdir(parents=True, exist_ok=True)
    pids.mkdir(parents=True, exist_ok=True)
    proc = start_logged(argv, logs / f"{name}.log", env=env, cwd=cwd)
    (pids / f"{name}.pid").write_text(f"{proc.pid} {start_time(proc.pid) or ''}\n")
    # Popen would warn at exit about a child still running: it is meant to outlive us.
    proc.returncode = 0
    return proc.pid


def recorded_pid(pids: Path, name: str) -> int | None:
    """The pid recorded for `name` if that very process still runs."""
    try:
        pid_text, _, started = (pids / f"{name}.pid").read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    now = start_time(pid)
    if now is None or (started and now != started):
        return None
    if Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0:
        return None
    return pid


def recorded_names(pids: Path) -> list[str]:
    return sorted(p.stem for p in pids.glob("*.pid")) if pids.is_dir() else []


def stop_group(pid: int, grace_s: float) -> None:
    """SIGTERM the process group led by `pid`, then SIGKILL it after `grace_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies of our own children count as gone.
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _listen_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port` (any address); closing sockets do not count."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    return inodes


def port_in_use(port: int) -> bool:
    # A listener blocks us; sockets of a stopped cluster still closing (TIME-WAIT) do
    # not, as the components set SO_REUSEADDR.
    return bool(_listen_inodes(port))


def port_owner(port: int) -> str | None:
    """`pid N (command)` of the process listening on `port`, if it can be found."""
    inodes = _listen_inodes(port)
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        comm = (proc / "comm").read_text().strip()
                        return f"pid {proc.name} ({comm})"
    return None
