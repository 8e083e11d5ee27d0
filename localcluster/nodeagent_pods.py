"""One worker thread per pod bound to a node of the agent: it prepares the
pod's volumes, runs its containers as local processes (init containers first,
restarts with back-off), reports status as the kubelet does, and on deletion
stops the processes within the grace period and deletes the pod."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcluster.kube import Kube, KubeError
from localcluster.nodeagent_logs import LogSink
from localcluster.nodeagent_spec import (
    ConditionClock,
    ConfigError,
    ContainerView,
    build_env,
    build_pod_status,
    build_terminated,
    expand,
    gpu_count,
    now_rfc3339,
    should_restart,
    termination_message,
)
from localcluster.nodeagent_volumes import PodVolumes
from localcluster.procs import start_time

log = logging.getLogger("nodeagent.pods")
PODEXEC = Path(__file__).with_name("podexec.py")
BACKOFF_CAP_S = 300.0
BACKOFF_RESET_S = 600.0  # a container that ran this long restarts without back-off
CONFIG_RETRY_S = 2.0
ORPHAN_REASON = "NodeAgentRestarted"
# A private mount namespace (volumes appear only to the pod) and UTS (its hostname).
UNSHARE = ("unshare", "--mount", "--uts", "--propagation", "private")


def _now() -> str:
    return now_rfc3339(datetime.datetime.now(datetime.timezone.utc))


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


class PodWorker(threading.Thread):
    def __init__(self, rt: Runtime, pod: dict[str, Any], adopted: bool = False) -> None:
        meta = pod["metadata"]
        super().__init__(daemon=True, name=f"pod-{meta['namespace']}/{meta['name']}")
        self.rt, self.pod = rt, pod
        self.uid, self.ns, self.pod_name = meta["uid"], meta["namespace"], meta["name"]
        self.node = pod["spec"]["nodeName"]
        self.dir = rt.state / f"{self.ns}_{self.pod_name}_{self.uid}"
        self.wake = threading.Event()
        self.removed = False
        self.clock = ConditionClock()
        self.sandbox_ready = False
        self.volumes: PodVolumes | None = None
        self.override: tuple[str, str, str] | None = None
        self.pod_gpus: list[int] = []
        self.last_sent: dict[str, Any] | None = None
        self.start_time = (pod.get("status") or {}).get("startTime") or _now()
        self.token_refresh = float("inf")
        spec = pod["spec"]
        self.inits = [self._container(c, True) for c in spec.get("initContainers", [])]
        self.apps = [self._container(c, False) for c in spec.get("containers", [])]
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            self.override = (phase, "", "")  # ended before: only wait for deletion
            self.last_sent = {}
        elif adopted:
            self._mark_orphaned()

    def _container(self, spec: dict[str, Any], init: bool) -> Container:
        view = ContainerView(name=spec["name"], image=spec.get("image", ""), init=init)
        return Container(spec=spec, view=view, folder=self.dir / spec["name"])

    def _mark_orphaned(self) -> None:
        """A pod whose process an earlier agent ran: nobody can tell how it ended."""
        msg = "the node agent restarted and lost this pod's processes"
        for c in self.inits + self.apps:
            c.view.waiting = None
            c.view.started_at = c.view.started_at or self.start_time
            c.view.terminated = {
                "exitCode": 137,
                "reason": ORPHAN_REASON,
                "message": msg,
                "startedAt": self.start_time,
                "finishedAt": _now(),
            }
            c.done = True
        self.override = ("Failed", ORPHAN_REASON, msg)

    # --- called from the watch threads ---
    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        self.wake.set()

    def gone(self) -> None:
        self.removed = True
        self.wake.set()

    def stop(self, grace: float) -> None:
        """The agent is shutting down: stop the processes, leave the API alone."""
        self._kill_all(grace)

    # --- the worker's loop ---
    def run(self) -> None:
        try:
            self._loop()
        except Exception as err:
            # A bug of ours must not leave the pod Running forever: fail it, and keep
            # handling its deletion.
            log.exception("pod %s/%s: worker failed", self.ns, self.pod_name)
            self._kill_all(grace=2)
            self.override = ("Failed", "NodeAgentError", f"the node agent failed: {err}")
            try:
                self._loop()
            except Exception:
                log.exception("pod %s/%s: worker gave up", self.ns, self.pod_name)
        finally:
            self._release()

    def _loop(self) -> None:
        while not self.rt.stopping.is_set():
            self.wake.clear()
            if self.removed:
                self._kill_all(grace=2)
                self._cleanup()
                return
            if self.pod["metadata"].get("deletionTimestamp"):
                self._terminate()
                return
            timeout = 30.0
            if self.override is None:
                timeout = min(timeout, self._step())
            if not self._report():
                timeout = min(timeout, 1.0)
            if self.override or self._terminal():
                self._release()
            self.wake.wait(timeout)

    def _terminal(self) -> bool:
        return (self.last_sent or {}).get("status", {}).get("phase") in ("Succeeded", "Failed")

    def _step(self) -> float:
        """Advances the pod one step; returns how long to sleep at most."""
        now = time.monotonic()
        if not self.sandbox_ready and not self._prepare():
            return CONFIG_RETRY_S
        if self.override:
            return 0.0
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        if deadline and self._age_s() > deadline:
            self._kill_all(grace=0)
            msg = f"Pod was active on the node longer than the specified deadline ({deadline}s)"
            self.override = ("Failed", "DeadlineExceeded", msg)
            return 0.0
        for c in self.inits + self.apps:
            self._reap(c)
        if now >= self.token_refresh and self.volumes:
            with contextlib.suppress(ConfigError):
                self.token_refresh = self.volumes.refresh_tokens()
        waits = [self.token_refresh - now]
        pending_init = next((c for c in self.inits if not self._init_ok(c)), None)
        runnable = [pending_init] if pending_init else self.apps
        for c in runnable:
            if c.proc is None and not c.done:
                if now >= c.next_start:
                    waits.append(self._start(c))
                else:
                    waits.append(c.next_start - now)
        return max(0.05, min(waits))

    @staticmethod
    def _init_ok(c: Container) -> bool:
        return c.done and c.view.terminated is not None and c.view.terminated["exitCode"] == 0

    def _age_s(self) -> float:
        started = datetime.datetime.fromisoformat(self.start_time.replace("Z", "+00:00"))
        return (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()

    def _prepare(self) -> bool:
        """Volumes, tokens and GPUs: the pod's sandbox. False: not yet (retried)."""
        try:
            if not self.pod_gpus:
                need = max(
                    max((gpu_count(c.spec) for c in self.inits), default=0),
                    sum(gpu_count(c.spec) for c in self.apps),
                )
                taken = self.rt.gpus[self.node].take(need) if need else []
                if taken is None:
                    msg = f"Allocate failed: {need} nvidia.com/gpu requested, not enough free"
                    self.override = ("Failed", "UnexpectedAdmissionError", msg)
                    return True
                self.pod_gpus = taken
                offset = 0
                for c in self.apps:
                    n = gpu_count(c.spec)
                    c.gpu_ids, offset = taken[offset : offset + n], offset + n
                for c in self.inits:
                    c.gpu_ids = taken[: gpu_count(c.spec)]
            self.volumes = PodVolumes(self.rt.kube, self.pod, self.dir)
            self.volumes.prepare()
            self.token_refresh = self.volumes.refresh_tokens()
        except (ConfigError, KubeError, OSError) as err:
            for c in self.inits + self.apps:
                c.view.waiting = ("CreateContainerConfigError", str(err))
            return False
        self.sandbox_ready = True
        return True

    def _start(self, c: Container) -> float:
        assert self.volumes is not None
        spec = c.spec
        try:
            lookups = self.volumes.objects
            env = build_env(
                self.pod,
                spec,
                self.rt.base_env(self.pod_name),
                self.rt.service_env(),
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
            mounts = self.volumes.mounts(spec)
        except (ConfigError, KubeError) as err:
            c.view.waiting = ("CreateContainerConfigError", str(err))
            return CONFIG_RETRY_S
        finally:
            self.volumes.objects.forget()  # the next start reads fresh objects
        c.folder.mkdir(parents=True, exist_ok=True)
        c.term_file.write_bytes(b"")
        target = spec.get("terminationMessagePath") or "/dev/termination-log"
        mounts.append({"source": str(c.term_file), "target": target, "readOnly": False})
        launch = {
            "hostname": self.pod_name[:63],
            "mounts": mounts,
            "cwd": spec.get("workingDir") or str(self.rt.repo),
            "image": str(self.rt.repo),
            "argv": argv,
            "env": env,
            "terminationFile": str(c.term_file),
        }
        spec_file = c.folder / "launch.json"
        spec_file.write_text(json.dumps(launch))
        spec_file.chmod(0o600)
        try:
            c.proc = subprocess.Popen(
                [*UNSHARE, sys.executable, "-I", "-S", str(PODEXEC), str(spec_file)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                cwd="/",
            )
        except OSError as err:
            c.view.waiting = ("RunContainerError", f"cannot start the launcher: {err}")
            return CONFIG_RETRY_S
        c.sink = LogSink(c.folder / f"{c.view.restart_count}.log")
        with open(self.dir / "pids", "a") as fh:  # lets a restarted agent stop strays
            fh.write(f"{c.proc.pid} {start_time(c.proc.pid)}\n")
        assert c.proc.stdout is not None and c.proc.stderr is not None
        c.sink.pump("stdout", c.proc.stdout)
        c.sink.pump("stderr", c.proc.stderr)
        proc = c.proc
        threading.Thread(target=self._wait_exit, args=(proc,), daemon=True).start()
        c.started_mono = time.monotonic()
        c.view.started_at, c.view.pid = _now(), proc.pid
        c.view.waiting = c.view.terminated = None
        self._event("Started", f"Started container {spec['name']}")
        return 30.0

    def _wait_exit(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        self.wake.set()

    def _reap(self, c: Container, may_restart: bool = True) -> None:
        if c.proc is None or c.proc.poll() is None:
            return
        code = c.proc.returncode
        if c.sink:
            c.sink.done.wait(2)  # lets the last lines land before reading the log tail
        tail = c.sink.path.read_bytes()[-64 * 1024 :] if c.sink else b""
        records = [ln.split(b" ", 3)[3] for ln in tail.splitlines() if ln.count(b" ") >= 3]
        policy = c.spec.get("terminationMessagePolicy", "File")
        exit_code = 128 - code if code < 0 else code
        message = termination_message(
            c.term_file.read_bytes(), policy, exit_code, b"\n".join(records)
        )
        state = build_terminated(code, c.view.started_at or _now(), _now(), message, c.proc.pid)
        c.proc = None
        ran = time.monotonic() - c.started_mono
        policy_restart = self.pod["spec"].get("restartPolicy", "Always")
        if c.view.init and policy_restart == "Always":
            policy_restart = "OnFailure"  # init containers never restart after success
        restart = may_restart and not self.rt.stopping.is_set()
        if restart and should_restart(policy_restart, state["exitCode"]):
            c.backoff = (
                self.rt.backoff_s
                if ran > BACKOFF_RESET_S or not c.backoff
                else min(BACKOFF_CAP_S, c.backoff * 2)
            )
            c.next_start = time.monotonic() + c.backoff
            c.view.last_terminated = state
            c.view.terminated = None
            c.view.restart_count += 1
            msg = f"back-off {c.backoff:.0f}s restarting failed container={c.spec['name']}"
            c.view.waiting = ("CrashLoopBackOff", msg)
            self._event("BackOff", msg, "Warning")
        else:
            c.view.terminated = state
            c.done = True

    # --- status ---
    def _report(self) -> bool:
        patch = build_pod_status(
            uid=self.uid,
            policy=self.pod["spec"].get("restartPolicy", "Always"),
            inits=[c.view for c in self.inits],
            apps=[c.view for c in self.apps],
            sandbox_ready=self.sandbox_ready,
            start_time=self.start_time,
            clock=self.clock,
            now=_now(),
            phase_override=self.override,
        )
        if patch == self.last_sent or (self.override and self.last_sent == {}):
            return True
        try:
            self.rt.kube.patch(f"/api/v1/namespaces/{self.ns}/pods/{self.pod_name}/status", patch)
        except KubeError as err:
            if err.status in (404, 409):
                self.removed = True
                return True
            log.warning("pod %s/%s: status not written: %s", self.ns, self.pod_name, err)
            return False
        self.last_sent = patch
        return True

    def _event(self, reason: str, message: str, kind: str = "Normal") -> None:
        stamp = _now()
        body = {
            "metadata": {"generateName": f"{self.pod_name}.", "namespace": self.ns},
            "involvedObject": {
                "kind": "Pod",
                "namespace": self.ns,
                "name": self.pod_name,
                "uid": self.uid,
                "apiVersion": "v1",
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": self.node},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        with contextlib.suppress(KubeError, OSError):
            self.rt.kube.create(f"/api/v1/namespaces/{self.ns}/events", body)

    # --- ending ---
    def _terminate(self) -> None:
        """Deletion requested: SIGTERM, the grace period, SIGKILL, then delete the pod."""
        running = [c for c in self.inits + self.apps if c.proc is not None]
        if running:
            names = ", ".join(c.spec["name"] for c in running)
            self._event("Killing", f"Stopping container {names}")
        self._kill_all(grace=None)
        report = self.override is None and self.sandbox_ready
        if report:
            apps = [c.view for c in self.apps]
            if any(c.terminated is None for c in apps):
                for c in self.apps:
                    if c.view.terminated is None:
                        c.view.waiting = None
                        c.view.terminated = {
                            "exitCode": 137 if c.view.started_at else 0,
                            "reason": "ContainerStatusUnknown",
                            "startedAt": c.view.started_at or _now(),
                            "finishedAt": _now(),
                        }
            failed = any(c.terminated and c.terminated["exitCode"] != 0 for c in apps)
            self.override = ("Failed" if failed else "Succeeded", "", "")
        # The final status and the delete are retried while the apiserver is away
        # (a kubelet's status manager does the same): given up on, the pod stayed
        # Terminating with a running container for ever, its owner waiting on it.
        delay = 0.5
        while not self.rt.stopping.is_set():
            if (not report or self._report()) and self._delete_now():
                break
            self.rt.stopping.wait(delay)
            delay = min(delay * 2, 5.0)
        self._cleanup()

    def _delete_now(self) -> bool:
        """Deletes the pod with grace 0; True once it is gone (or is another pod now)."""
        path = f"/api/v1/namespaces/{self.ns}/pods/{self.pod_name}"
        try:
            self.rt.kube.delete(path, {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}})
        except KubeError as err:
            if err.status in (404, 409):
                return True
            log.warning("pod %s/%s: not deleted yet: %s", self.ns, self.pod_name, err)
            return False
        return True

    def _grace_left(self, since: float) -> float:
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return since + float(grace) - time.monotonic()

    def _kill_all(self, grace: float | None) -> None:
        """Stops every process group; grace None follows the pod's (updatable) grace."""
        procs = [(c, c.proc) for c in self.inits + self.apps if c.proc is not None]
        for _, proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        since = time.monotonic()
        while any(proc.poll() is None for _, proc in procs):
            left = self._grace_left(since) if grace is None else since + grace - time.monotonic()
            if left <= 0:
                break
            self.wake.wait(min(left, 0.1))
            self.wake.clear()
        for c, proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if c.proc is proc:
                self._reap(c, may_restart=False)

    def _release(self) -> None:
        if self.pod_gpus:
            self.rt.gpus[self.node].give(self.pod_gpus)
            self.pod_gpus = []

    def _cleanup(self) -> None:
        self._release()
        shutil.rmtree(self.dir, ignore_errors=True)
