"""The jobs, worker pods and progress documents the operator's unit tests
decide from, built in one place. Test modules of this folder import it by
name: pytest puts a test module's folder on sys.path."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from kubetune_contract import LABEL_JOB, LABEL_JOB_UID
from kubetune_operator.model import JobView, PodView

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
UID = "uid-1"


def job_body(
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    *,
    name: str = "j",
    namespace: str = "ns",
    uid: str = UID,
    generation: int = 1,
    labels: dict[str, str] | None = None,
    resource_version: str | None = None,
) -> dict[str, Any]:
    """Job `ns/j` as the API returns it: a trainable and its storage, and what
    `spec` adds or replaces."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "generation": generation,
    }
    if resource_version is not None:
        meta["resourceVersion"] = resource_version
    if labels:
        meta["labels"] = dict(labels)
    base = {"trainable": "examples.a:B", "storage": {"uri": "s3://b/p"}, **(spec or {})}
    return {"metadata": meta, "spec": base, "status": dict(status or {})}


def job(
    spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, **meta: Any
) -> JobView:
    """The JobView of job_body(spec, status, **meta)."""
    return JobView.from_body(job_body(spec, status, **meta))


def pod(name: str = "j-worker-1", phase: str = "Running", **kw: Any) -> PodView:
    """A worker pod as the state machine sees it."""
    return PodView(
        name=name, uid=f"uid-{name}", phase=phase, deleting=kw.pop("deleting", False), **kw
    )


def worker_pod(
    name: str = "j-worker-1",
    uid: str = "p1",
    job: str = "j",
    job_uid: str = "u1",
    *,
    phase: str = "Running",
) -> dict[str, Any]:
    """A worker pod's body as the watches see it, labelled with its job."""
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": uid,
            "labels": {LABEL_JOB: job, LABEL_JOB_UID: job_uid},
        },
        "status": {"phase": phase},
    }


def progress_doc(
    run_id: str, iteration: int = 1, updated: float | None = None, **result: Any
) -> dict[str, Any]:
    """A running worker's progress document (what it pushes and writes to S3)."""
    return {
        "run_id": run_id,
        "state": "running",
        "iteration": iteration,
        "last_result": {"training_iteration": iteration, **result},
        "updated": time.time() if updated is None else updated,
    }
