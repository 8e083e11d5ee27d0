"""A handle on one TrainableJob from Python: its status, waiting on it (by
watching the resource, not by polling), suspend and resume, its worker's logs
across attempts, and its results and checkpoints read from S3 with the same
storage layer as the worker."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from kubetune.client.kube import Kube, NotFound
from kubetune.sdk.checkpoint_handle import Checkpoint
from kubetune.sdk.errors import KubetuneError

TERMINAL = ("Succeeded", "Failed")
# A watch is renewed this often (and after the server ends it): bounds how long
# a lost event could hide a change.
WATCH_RENEW_S = 60
# Following logs between attempts: the longest wait for a pod event before the
# job's status is read again.
POD_WAIT_S = 5


class JobFailed(KubetuneError):
    """The job ended Failed; reason and message are its status's."""

    def __init__(self, name: str, reason: str, message: str) -> None:
        super().__init__(f"TrainableJob {name} failed ({reason}): {message}")
        self.reason = reason
        self.message = message


class WaitTimeout(KubetuneError, TimeoutError):
    pass


def condition(body: dict[str, Any], ctype: str) -> dict[str, Any]:
    for c in (body.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}


def reached(body: dict[str, Any], until: str) -> bool:
    """`until` is a phase (Pending, Running, Suspended, Succeeded, Failed ...)
    or a condition type that is True (Complete, Finished, Checkpointed, Admitted ...)."""
    phase = (body.get("status") or {}).get("phase")
    return phase == until or condition(body, until).get("status") == "True"


def failure(body: dict[str, Any]) -> tuple[str, str]:
    failed = condition(body, "Failed")
    return failed.get("reason") or "Failed", failed.get("message") or ""


class Job:
    """Returned by `kubetune.submit`; also `Job(name, namespace=...)` for an
    existing TrainableJob."""

    def __init__(
        self,
        name: str,
        namespace: str | None = None,
        *,
        kube: Kube | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        self.kube = kube or Kube.connect()
        self.name = name
        self.namespace = namespace or self.kube.namespace
        # Where this process reaches the job's S3 (None: the job's own endpoint).
        self._endpoint_url = endpoint_url

    def __repr__(self) -> str:
        return f"Job({self.name!r}, namespace={self.namespace!r})"

    # the resource

    def get(self) -> dict[str, Any]:
        """The TrainableJob as the API server has it now."""
        return self.kube.get_job(self.namespace, self.name)

    def status(self) -> dict[str, Any]:
        return dict(self.get().get("status") or {})

    @property
    def phase(self) -> str:
        return str(self.status().get("phase") or "")

    def wait(self, until: str = "Finished", timeout: float | None = None) -> dict[str, Any]:
        """Block until the job reaches `until` (a phase or a True condition) and
        return its status. A job that fails raises JobFailed with its reason and
        message (unless `until` is "Failed"); one that succeeds before reaching
        `until` returns its final status. One watch serves every change."""
        deadline = None if timeout is None else time.monotonic() + timeout
        body = self.get()
        while True:
            done = self._settled(body, until)
            if done is not None:
                return done
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                phase = (body.get("status") or {}).get("phase")
                raise WaitTimeout(
                    f"TrainableJob {self.name} is {phase or 'new'}, not {until}, "
                    f"after {timeout:.0f}s"
                )
            renew = WATCH_RENEW_S if left is None else min(WATCH_RENEW_S, max(1, int(left)))
            rv = body["metadata"]["resourceVersion"]
            seen = False
            for kind, new in self.kube.watch_job(self.namespace, self.name, rv, renew):
                if kind == "DELETED":
                    raise NotFound(f"TrainableJob {self.namespace}/{self.name} was deleted")
                if kind in ("ADDED", "MODIFIED"):
                    body, seen = new, True
                    if self._settled(body, until) is not None:
                        break
            if not seen:
                body = self.get()  # the watch ended without news: read afresh (also after a 410)

    def _settled(self, body: dict[str, Any], until: str) -> dict[str, Any] | None:
        """The status once waiting is over; JobFailed for a failed job."""
        status = dict(body.get("status") or {})
        if status.get("phase") == "Failed" and until != "Failed":
            raise JobFailed(self.name, *failure(body))
        if reached(body, until) or status.get("phase") == "Succeeded":
            return status
        return None

    def suspend(self) -> None:
        """Checkpoint and stop the worker; `resume()` continues from the checkpoint."""
        self.kube.patch_job(self.namespace, self.name, {"spec": {"suspend": True}})

    def resume(self) -> None:
        self.kube.patch_job(self.namespace, self.name, {"spec": {"suspend": False}})

    def delete(self) -> None:
        """Delete the TrainableJob (its pods go with it); its data in S3 stays."""
        self.kube.delete_job(self.namespace, self.name)

    # logs

    def logs(self, follow: bool = False) -> Iterator[str]:
        """The worker's log lines, attempt after attempt (worker pod 1, 2, ...).
        With follow, waits for each next attempt's pod until the job has ended."""
        attempt = 1
        while True:
            pod_name = f"{self.name}-worker-{attempt}"
            found = self._await_pod(pod_name, attempt, follow)
            if found == "end":
                return
            if found == "started":
                with contextlib.suppress(NotFound):  # gone before its log could be read
                    yield from self.kube.pod_log_lines(self.namespace, pod_name, follow)
            attempt += 1

    def _await_pod(self, pod_name: str, attempt: int, follow: bool) -> str:
        """ "started" once the attempt's container has started; "skip" when the
        attempt never had a pod (e.g. suspended while queued); "end" when no
        later attempt will come (the job has ended, or we do not follow)."""
        while True:
            pods, rv = self.kube.job_pods(self.namespace, self.name)
            pod = next((p for p in pods if p.metadata.name == pod_name), None)
            if pod is not None and (pod.status.phase != "Pending" or _has_started(pod)):
                return "started"
            status = self.status()
            current = int(status.get("attempt") or 0)
            if pod is None and current > attempt:
                return "skip"
            if not follow or (status.get("phase") in TERMINAL and current <= attempt):
                return "end" if pod is None or not follow else "started"
            # Wake at the next change of the job's pods; the job's own end is
            # looked at again at least every POD_WAIT_S.
            self.kube.await_pod_change(self.namespace, self.name, rv, POD_WAIT_S)

    # results and checkpoints

    def _storage(self) -> Any:
        from kubetune.storage import open_storage

        spec = self.get()["spec"]
        storage = spec.get("storage") or {}
        run_uri = f"{storage['uri'].rstrip('/')}/{self.namespace}/{self.name}"
        endpoint = self._endpoint_url or storage.get("endpointURL")
        return open_storage(run_uri, endpoint_url=endpoint)

    def results(self) -> Any:
        """The rows of the job's result.json, each iteration once: a pandas
        DataFrame when pandas is installed, else a list of dicts."""
        from kubetune.storage.results import read_results

        rows = read_results(self._storage())
        try:
            import pandas
        except ImportError:
            return rows
        return pandas.DataFrame(rows)

    @property
    def best_checkpoint(self) -> Checkpoint | None:
        """The best checkpoint (by checkpoint.scoreAttribute), else the latest:
        a kubetune.Checkpoint to restore locally (`Trainable.restore(ckpt)`)."""
        status = self.status()
        entry = status.get("bestCheckpoint") or status.get("latestCheckpoint")
        if not entry:
            return None
        storage = self.get()["spec"].get("storage") or {}
        endpoint = self._endpoint_url or storage.get("endpointURL")
        return Checkpoint(
            entry["path"], endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL")
        )


def _has_started(pod: Any) -> bool:
    for cs in pod.status.container_statuses or []:
        if cs.state and (cs.state.running or cs.state.terminated):
            return True
    return False
