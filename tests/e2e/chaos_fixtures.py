"""What the chaos tests observe while they inject faults, and how they count:
worker pods seen by a watch (creations, most alive at once per job), result.json
rows (each iteration once, no gaps), checkpoint listings (only complete ones
trusted), and the one line each test prints."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, watch
from operator_fixtures import cluster_env, get_job, read_results, report_figure

from kubetune.storage import open_storage
from kubetune.storage.runfolder import RunStore

ENDED = ("Succeeded", "Failed")


class WorkerPodWatch(threading.Thread):
    """Watches a namespace's worker pods through the API and remembers, per job,
    every pod created and the most that were alive (not ended, not deleted) at
    once. A watch broken by a fault (the apiserver or etcd away) lists again:
    nothing can be created while the API is down, so nothing is missed."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        super().__init__(daemon=True, name=f"pod-watch-{namespace}")
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.alive: dict[str, dict[str, str]] = {}  # job -> pod uid -> pod name
        self.created: dict[str, set[str]] = {}  # job -> pod uids ever seen
        self.most: dict[str, int] = {}
        self.reconnects = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def _see(self, pod: Any, deleted: bool) -> None:
        job = (pod.metadata.labels or {}).get("kubetune.io/job")
        if not job:
            return
        uid = pod.metadata.uid
        with self.lock:
            self.created.setdefault(job, set()).add(uid)
            alive = self.alive.setdefault(job, {})
            if deleted or (pod.status and pod.status.phase in ENDED):
                alive.pop(uid, None)
            else:
                alive[uid] = pod.metadata.name
            self.most[job] = max(self.most.get(job, 0), len(alive))

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                listed = self.core.list_namespaced_pod(self.namespace, _request_timeout=10)
                with self.lock:
                    for pods in self.alive.values():  # gone while we were not watching
                        pods.clear()
                for pod in listed.items:
                    self._see(pod, False)
                stream = watch.Watch().stream(
                    self.core.list_namespaced_pod,
                    self.namespace,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=30,
                    _request_timeout=40,
                )
                for event in stream:
                    self._see(event["object"], event["type"] == "DELETED")
                    if self.stopping.is_set():
                        return
            except Exception:  # the API is away (the fault) or the watch expired
                self.reconnects += 1
                time.sleep(0.5)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=45)

    def duplicates(self) -> int:
        """Jobs that ever had two worker pods alive at once (must be 0)."""
        return sum(1 for n in self.most.values() if n > 1)

    def pods_created(self, job: str) -> int:
        return len(self.created.get(job, ()))


def run_store(manifest: dict[str, Any], namespace: str) -> RunStore:
    """The job's run folder on the cluster's S3, read with the test's credentials."""
    env = cluster_env()
    uri = manifest["spec"]["storage"]["uri"] + f"/{namespace}/{manifest['metadata']['name']}"
    creds = {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    return RunStore(open_storage(uri, endpoint_url=env["AWS_ENDPOINT_URL"], credentials=creds))


def run_uri(manifest: dict[str, Any], namespace: str) -> str:
    return manifest["spec"]["storage"]["uri"] + f"/{namespace}/{manifest['metadata']['name']}"


def iterations_lost(rows: list[dict[str, Any]], last: int) -> tuple[int, int]:
    """(missing, repeated) iterations among result.json's rows for 1..last."""
    seen = [int(r["training_iteration"]) for r in rows]
    missing = len(set(range(1, last + 1)) - set(seen))
    return missing, len(seen) - len(set(seen))


def restore_points(rows: list[dict[str, Any]]) -> list[int]:
    """The checkpoint iteration each later attempt started from (its first row
    has iterations_since_restore 1 after iteration k: it restored k)."""
    return [
        int(r["training_iteration"]) - 1
        for r in rows
        if r.get("iterations_since_restore") == 1 and int(r["training_iteration"]) > 1
    ]


@dataclass
class Tally:
    """The counts each chaos test prints as one line and checks."""

    fault: str
    runs: int = 0
    faults: int = 0
    jobs_lost: int = 0
    iterations_lost: int = 0
    duplicate_pods: int = 0
    notes: list[str] = field(default_factory=list)

    def check_job(
        self, s3: Any, namespace: str, manifest: dict[str, Any], last: int
    ) -> dict[str, Any]:
        """Counts one finished job: lost unless Succeeded at `last`; its rows;
        its status checkpoints against S3's complete ones. Returns its status."""
        self.runs += 1
        name = manifest["metadata"]["name"]
        status = get_job(namespace, name).get("status") or {}
        if status.get("phase") != "Succeeded" or status.get("iteration") != last:
            self.jobs_lost += 1
            self.notes.append(f"{name}: {status.get('phase')} at {status.get('iteration')}")
        rows = read_results(s3, run_uri(manifest, namespace))
        missing, repeated = iterations_lost(rows, last)
        self.iterations_lost += missing + repeated
        store = run_store(manifest, namespace)
        complete = {c.path: c.iteration for c in store.list_checkpoints()}
        trusted = [status.get("latestCheckpoint"), *(status.get("checkpoints") or [])]
        if status.get("bestCheckpoint"):
            trusted.append(status["bestCheckpoint"])
        for ckpt in filter(None, trusted):
            assert complete.get(ckpt["path"]) == ckpt["iteration"], (
                f"{name}: status names {ckpt} but S3's complete checkpoints are {complete}"
            )
        return status

    def report(self) -> str:
        line = (
            f"chaos {self.fault}: runs {self.runs}, faults injected {self.faults}, "
            f"jobs lost {self.jobs_lost}, iterations lost {self.iterations_lost}, "
            f"duplicate pods {self.duplicate_pods}"
        )
        if self.notes:
            line += f" ({'; '.join(self.notes)})"
        report_figure(line)
        return line

    def assert_zeros(self) -> None:
        assert (self.jobs_lost, self.iterations_lost, self.duplicate_pods) == (0, 0, 0), (
            self.report()
        )
        assert self.faults > 0 and self.runs > 0
