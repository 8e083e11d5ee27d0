"""One worker thread per pod bound to a node of the agent: it prepares the
pod's sandbox (volumes, tokens, GPUs), runs its containers (init containers
first, see containers.py), reports status as the kubelet does, and on
deletion stops the processes within the grace period and deletes the pod."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import signal
import threading
import time
from typing import Any

from localcluster.nodeagent.containers import CONFIG_RETRY_S, Container, reap, start_process
from localcluster.nodeagent.env import ConfigError, gpu_count
from localcluster.nodeagent.kube import KubeError
from localcluster.nodeagent.node import now_stamp
from localcluster.nodeagent.runtime import Runtime
from localcluster.nodeagent.status import ConditionClock, ContainerView, build_pod_status
from localcluster.nodeagent.volumes import PodVolumes

log = logging.getLogger("nodeagent.pods")
ORPHAN_REASON = "NodeAgentRestarted"


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
        self.start_time = (pod.get("status") or {}).get("startTime") or now_stamp()
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
                "finishedAt": now_stamp(),
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
        if not start_process(c, self.rt, self.pod, self.volumes, self.dir, self.wake):
            return CONFIG_RETRY_S
        self._event("Started", f"Started container {c.spec['name']}")
        return 30.0

    def _reap(self, c: Container, may_restart: bool = True) -> None:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        backoff = reap(c, self.rt, policy, may_restart)
        if backoff:
            self._event("BackOff", backoff, "Warning")

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
            now=now_stamp(),
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
        stamp = now_stamp()
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
                            "startedAt": c.view.started_at or now_stamp(),
                            "finishedAt": now_stamp(),
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
