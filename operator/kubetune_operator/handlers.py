"""kopf registrations: watches that feed the cache and the work queue, the
progress endpoint, and the reconcile threads.

Nothing runs on a timer per job. A TrainableJob is reconciled when it or one
of its worker pods changes, when its worker reports, when a time-based check
is due (a silent worker, the active deadline), and by the slow resync. Pods
are indexed, so kopf holds every handler until the initial listing of worker
pods is in the cache: a restarted operator never decides from a partial view
(and never mistakes a pod it has not listed yet for a lost one).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any, cast

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubetune_contract import (
    API_GROUP,
    API_VERSION,
    LABEL_JOB_UID,
    LABEL_SWEEP,
    PLURAL,
    PROGRESS_AUDIENCE,
)
from kubetune_operator import kube, kueue
from kubetune_operator.cache import WorkerPod, job_key
from kubetune_operator.controller import Controller, ControllerSettings
from kubetune_operator.metrics import JOBS, JOBS_CACHED, QUEUE_DEPTH
from kubetune_operator.podspec import PodSettings
from kubetune_operator.progress_api import PATH, ProgressReceiver
from kubetune_operator.sweeps.controller import SweepController

log = logging.getLogger("kubetune_operator")

# Jobs made by operator versions that ran a timer per job carry this finalizer.
LEGACY_FINALIZER = f"{API_GROUP}/operator"


@dataclass(frozen=True)
class Endpoints:
    progress_listen: str = ""  # host:port; empty: no progress endpoint
    metrics_listen: str = ""


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def controller_settings() -> ControllerSettings:
    return ControllerSettings(
        pod=PodSettings(
            default_image=os.environ.get("KUBETUNE_WORKER_IMAGE", PodSettings.default_image),
            termination_grace_seconds=int(
                os.environ.get(
                    "KUBETUNE_WORKER_GRACE_SECONDS", PodSettings.termination_grace_seconds
                )
            ),
            progress_url=os.environ.get("KUBETUNE_PROGRESS_URL", ""),
            progress_ca_file=os.environ.get("KUBETUNE_PROGRESS_CA_FILE", ""),
        ),
        workers=int(os.environ.get("KUBETUNE_RECONCILE_THREADS", "16")),
        resync_s=max(60.0, _env_float("KUBETUNE_RESYNC_SECONDS", 300.0)),
        progress_interval_s=_env_float("KUBETUNE_PROGRESS_INTERVAL", 0.5),
        status_writes_per_s=_env_float("KUBETUNE_STATUS_WRITES_PER_SECOND", 150.0),
        pod_writes_per_s=_env_float("KUBETUNE_POD_WRITES_PER_SECOND", 100.0),
        kueue=os.environ.get("KUBETUNE_KUEUE", "") == "1",
    )


def endpoints() -> Endpoints:
    return Endpoints(
        progress_listen=os.environ.get("KUBETUNE_PROGRESS_LISTEN", ""),
        metrics_listen=os.environ.get("KUBETUNE_METRICS_LISTEN", ""),
    )


class NoDiffBase(kopf.DiffBaseStorage):
    """We register no change handlers, so kopf needs no last-handled state; its
    default storage would still deep-copy every body on every event."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


CONTROLLER = Controller(controller_settings())
SWEEPS = SweepController(CONTROLLER.cache, CONTROLLER.credentials)
# A trial's reports move its sweep's status: at most one sweep reconcile per
# this many seconds for them (state changes of a trial go at once).
SWEEP_COALESCE_S = 2.0
_runners: list[web.AppRunner] = []
# Gauges read at scrape time from what the operator keeps anyway: O(1), or
# O(namespaces x phases) for the jobs by phase (counted as jobs change).
JOBS.watch(CONTROLLER.cache.phase_counts)
JOBS_CACHED.set_function(CONTROLLER.cache.job_count)
QUEUE_DEPTH.set_function(CONTROLLER.queue.depth)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's own bookkeeping (if any) lives in annotations with our prefix,
    # never in status: status belongs to the state machine alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    # Silent watch stalls are a known kopf failure mode (nolar/kopf#585, #957):
    # ask the server to end each watch after 5 min and give up on a silent one.
    # A watch ended this way resumes from its resourceVersion (no re-listing).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # Handlers only copy facts into the cache: no thread pool needed for them.
    settings.posting.level = logging.WARNING
    CONTROLLER.start()
    SWEEPS.start()
    await _serve(endpoints())


async def _serve(where: Endpoints) -> None:
    loop = asyncio.get_running_loop()

    async def review(token: str) -> dict[str, Any]:
        return await loop.run_in_executor(None, kube.review_token, token, PROGRESS_AUDIENCE)

    def on_report(pod: WorkerPod, doc: bytes, updated: float) -> None:
        if CONTROLLER.book.push(pod.job_uid, doc, updated, pod.view.name):
            CONTROLLER.progress_pushed(pod.job_key)

    if where.progress_listen:
        receiver = ProgressReceiver(CONTROLLER.cache, review, on_report)
        await _start_site(receiver.app(), where.progress_listen)
        log.info("progress endpoint on http://%s%s", where.progress_listen, PATH)
    if where.metrics_listen:
        app = web.Application()
        app.router.add_get("/metrics", _metrics)
        await _start_site(app, where.metrics_listen)


async def _start_site(app: web.Application, listen: str) -> None:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
    _runners.append(runner)


async def _metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


@kopf.on.cleanup()
async def shutdown(**_: Any) -> None:
    CONTROLLER.stop()
    SWEEPS.stop()
    for runner in _runners:
        await runner.cleanup()


# Worker pods: labelled by the operator with their job's uid. kopf filters
# labels client-side (a watch of all pods); the index makes kopf hold every
# handler until the initial listing has been indexed.


@kopf.index("v1", "pods", labels={LABEL_JOB_UID: kopf.PRESENT})
async def worker_pods_listed(body: kopf.Body, **_: Any) -> None:
    CONTROLLER.cache.put_pod(dict(body))


@kopf.on.event("v1", "pods", labels={LABEL_JOB_UID: kopf.PRESENT})
async def worker_pod_changed(event: kopf.RawEvent, **_: Any) -> None:
    raw = cast(dict[str, Any], event["object"])
    if event.get("type") == "DELETED":
        pod = CONTROLLER.cache.forget_pod(raw)
    else:
        pod = CONTROLLER.cache.put_pod(raw)
    if pod is not None:
        CONTROLLER.queue.add(pod.job_key, urgent=True)


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
async def job_changed(event: kopf.RawEvent, **_: Any) -> None:
    raw = cast(dict[str, Any], event["object"])
    key = job_key(raw)
    meta = raw.get("metadata") or {}
    if event.get("type") == "DELETED":
        CONTROLLER.forget_job(key, meta.get("uid") or "")
        sweep = (meta.get("labels") or {}).get(LABEL_SWEEP)
        if sweep:
            SWEEPS.queue.add((key[0], sweep))
        return
    if meta.get("deletionTimestamp") and LEGACY_FINALIZER in (meta.get("finalizers") or []):
        await asyncio.get_running_loop().run_in_executor(
            None, kube.remove_finalizer, key[0], key[1], meta["finalizers"], LEGACY_FINALIZER
        )
    CONTROLLER.cache.put_job(raw, from_watch=True)
    CONTROLLER.queue.add(key, urgent=True)
    sweep = (meta.get("labels") or {}).get(LABEL_SWEEP)
    if sweep:
        phase_known = (raw.get("status") or {}).get("phase") in ("Running", "Restarting")
        SWEEPS.queue.add((key[0], sweep), SWEEP_COALESCE_S if phase_known else 0.0)


# Kueue Workloads of queued jobs (only with --kueue). Indexed like the pods: a
# restarted operator never takes a Workload it has not listed yet for a
# missing one (and never stops an admitted job for it).

if CONTROLLER.settings.kueue:

    @kopf.index(kueue.GROUP, kueue.VERSION, kueue.WORKLOADS, labels={LABEL_JOB_UID: kopf.PRESENT})
    async def workloads_listed(body: kopf.Body, **_: Any) -> None:
        CONTROLLER.cache.put_workload(dict(body))

    @kopf.on.event(
        kueue.GROUP, kueue.VERSION, kueue.WORKLOADS, labels={LABEL_JOB_UID: kopf.PRESENT}
    )
    async def workload_changed(event: kopf.RawEvent, **_: Any) -> None:
        raw = cast(dict[str, Any], event["object"])
        if event.get("type") == "DELETED":
            key = CONTROLLER.cache.forget_workload(raw)
        else:
            key = CONTROLLER.cache.put_workload(raw, from_watch=True)
        if key is not None:
            CONTROLLER.queue.add(key, urgent=True)


# TrainableSweeps: their trials are TrainableJobs (above), labelled with the sweep.


@kopf.index(API_GROUP, API_VERSION, PLURAL, labels={LABEL_SWEEP: kopf.PRESENT})
async def trials_listed(body: kopf.Body, **_: Any) -> None:
    """Holds every handler (sweeps' too) until the trials are listed: a sweep
    never counts its trials from a partial view (nor makes one twice)."""
    CONTROLLER.cache.put_job(dict(body), from_watch=True)


@kopf.on.event(API_GROUP, API_VERSION, "trainablesweeps")
async def sweep_changed(event: kopf.RawEvent, **_: Any) -> None:
    raw = cast(dict[str, Any], event["object"])
    key = job_key(raw)
    if event.get("type") == "DELETED":
        CONTROLLER.cache.forget_sweep(key)
        SWEEPS.forget(key)
        return
    CONTROLLER.cache.put_sweep(raw)
    SWEEPS.queue.add(key, urgent=True)
