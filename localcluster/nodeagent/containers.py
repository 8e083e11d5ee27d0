"""One container of a pod as a local process: its launch (environment, bind
mounts and command handed to the launcher, run under `unshare`), its log,
and how its exit is read (termination message, restart with back-off)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcluster.nodeagent.env import ConfigError, build_env, expand
from localcluster.nodeagent.kube import KubeError
from localcluster.nodeagent.logs import LogSink
from localcluster.nodeagent.node import now_stamp
from localcluster.nodeagent.runtime import Runtime
from localcluster.nodeagent.status import (
    ContainerView,
    build_terminated,
    should_restart,
    termination_message,
)
from localcluster.nodeagent.volumes import PodVolumes
from localcluster.procs import start_time

LAUNCHER = Path(__file__).with_name("launcher.py")
BACKOFF_CAP_S = 300.0
BACKOFF_RESET_S = 600.0  # a container that ran this long restarts without back-off
CONFIG_RETRY_S = 2.0
# A private mount namespace (volumes appear only to the pod) and UTS (its hostname).
UNSHARE = ("unshare", "--mount", "--uts", "--propagation", "private")


@dataclass
class Container:
    spec: dict[str, Any]
    view: ContainerView
    folder: Path
    gpu_ids: list[int] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    sink: LogSink | None = None
    started_mono: float = 0.0
    next_start: float = 0.0
    backoff: float = 0.0
    done: bool = False  # terminated for good (no restart coming)

    @property
    def term_file(self) -> Path:
        return self.folder / "termination-log"


def start_process(
    c: Container,
    rt: Runtime,
    pod: dict[str, Any],
    volumes: PodVolumes,
    pod_dir: Path,
    wake: threading.Event,
) -> bool:
    """Starts `c`'s process through the launcher; `wake` is set when it exits.
    False: it cannot start yet (its waiting reason says why; retried)."""
    spec = c.spec
    pod_name = pod["metadata"]["name"]
    try:
        lookups = volumes.objects
        env = build_env(
            pod,
            spec,
            rt.base_env(pod_name),
            rt.service_env(),
            lookups.text("secrets"),
            lookups.text("configmaps"),
        )
        ids = ",".join(str(i) for i in c.gpu_ids)
        if c.gpu_ids or "CUDA_VISIBLE_DEVICES" not in env:
            # As in a container, GPUs not handed to the pod are not visible.
            env["CUDA_VISIBLE_DEVICES"] = env["NVIDIA_VISIBLE_DEVICES"] = ids
        argv = [expand(a, env) for a in spec.get("command", []) + spec.get("args", [])]
        if not spec.get("command"):
            raise ConfigError(
                f"container {spec['name']!r} has no command: the local node agent ignores "
                "images, so give the command to run"
            )
        mounts = volumes.mounts(spec)
    except (ConfigError, KubeError) as err:
        c.view.waiting = ("CreateContainerConfigError", str(err))
        return False
    finally:
        volumes.objects.forget()  # the next start reads fresh objects
    c.folder.mkdir(parents=True, exist_ok=True)
    c.term_file.write_bytes(b"")
    target = spec.get("terminationMessagePath") or "/dev/termination-log"
    mounts.append({"source": str(c.term_file), "target": target, "readOnly": False})
    launch = {
        "hostname": pod_name[:63],
        "mounts": mounts,
        "cwd": spec.get("workingDir") or str(rt.repo),
        "image": str(rt.repo),
        "argv": argv,
        "env": env,
        "terminationFile": str(c.term_file),
    }
    spec_file = c.folder / "launch.json"
    spec_file.write_text(json.dumps(launch))
    spec_file.chmod(0o600)
    try:
        c.proc = subprocess.Popen(
            [*UNSHARE, sys.executable, "-I", "-S", str(LAUNCHER), str(spec_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            cwd="/",
        )
    except OSError as err:
        c.view.waiting = ("RunContainerError", f"cannot start the launcher: {err}")
        return False
    c.sink = LogSink(c.folder / f"{c.view.restart_count}.log")
    with open(pod_dir / "pids", "a") as fh:  # lets a restarted agent stop strays
        fh.write(f"{c.proc.pid} {start_time(c.proc.pid)}\n")
    assert c.proc.stdout is not None and c.proc.stderr is not None
    c.sink.pump("stdout", c.proc.stdout)
    c.sink.pump("stderr", c.proc.stderr)
    proc = c.proc
    threading.Thread(target=_wait_exit, args=(proc, wake), daemon=True).start()
    c.started_mono = time.monotonic()
    c.view.started_at, c.view.pid = now_stamp(), proc.pid
    c.view.waiting = c.view.terminated = None
    return True


def _wait_exit(proc: subprocess.Popen[bytes], wake: threading.Event) -> None:
    proc.wait()
    wake.set()


def reap(c: Container, rt: Runtime, restart_policy: str, may_restart: bool = True) -> str | None:
    """Reads how `c`'s process ended, if it has: terminated for good, or to be
    restarted after a back-off. Returns the back-off's message when it restarts."""
    if c.proc is None or c.proc.poll() is None:
        return None
    code = c.proc.returncode
    if c.sink:
        c.sink.done.wait(2)  # lets the last lines land before reading the log tail
    tail = c.sink.path.read_bytes()[-64 * 1024 :] if c.sink else b""
    records = [ln.split(b" ", 3)[3] for ln in tail.splitlines() if ln.count(b" ") >= 3]
    policy = c.spec.get("terminationMessagePolicy", "File")
    exit_code = 128 - code if code < 0 else code
    message = termination_message(c.term_file.read_bytes(), policy, exit_code, b"\n".join(records))
    state = build_terminated(
        code, c.view.started_at or now_stamp(), now_stamp(), message, c.proc.pid
    )
    c.proc = None
    ran = time.monotonic() - c.started_mono
    if c.view.init and restart_policy == "Always":
        restart_policy = "OnFailure"  # init containers never restart after success
    restart = may_restart and not rt.stopping.is_set()
    if restart and should_restart(restart_policy, state["exitCode"]):
        c.backoff = (
            rt.backoff_s
            if ran > BACKOFF_RESET_S or not c.backoff
            else min(BACKOFF_CAP_S, c.backoff * 2)
        )
        c.next_start = time.monotonic() + c.backoff
        c.view.last_terminated = state
        c.view.terminated = None
        c.view.restart_count += 1
        msg = f"back-off {c.backoff:.0f}s restarting failed container={c.spec['name']}"
        c.view.waiting = ("CrashLoopBackOff", msg)
        return msg
    c.view.terminated = state
    c.done = True
    return None
