"""kopf registrations: one level-triggered reconcile per TrainableJob, run by a timer.

Each tick reads the job and its pods fresh, reads the worker's progress from
storage, asks the state machine what to do, writes status once (guarded by the
resourceVersion it read), then acts. Nothing is kept in memory between ticks,
so an operator killed at any moment resumes where the status says.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from typing import Any

import kopf

from kubetune_operator import kube, storageio
from kubetune_operator.model import (
    API_GROUP,
    API_VERSION,
    PLURAL,
    JobView,
    Phase,
    PodView,
    is_terminal,
)
from kubetune_operator.podspec import PodSettings, build_worker_pod
from kubetune_operator.statemachine import (
    compute_decision,
    needs_restore_check,
    refuse_pod_decision,
)

log = logging.getLogger("kubetune_operator")

# One tick a second bounds each job's status writes to 1/s and keeps a result
# reported by the worker (which writes progress every 0.5 s) within ~2 s of status.
RECONCILE_INTERVAL_S = float(os.environ.get("KUBETUNE_RECONCILE_INTERVAL", "1.0"))


def pod_settings() -> PodSettings:
    return PodSettings(
        default_image=os.environ.get("KUBETUNE_WORKER_IMAGE", PodSettings.default_image),
        termination_grace_seconds=int(
            os.environ.get("KUBETUNE_WORKER_GRACE_SECONDS", PodSettings.termination_grace_seconds)
        ),
    )


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Timers need a finalizer so kopf can stop them before the object goes; ours
    # is named for the project and removed as soon as a job is finished.
    settings.persistence.finalizer = f"{API_GROUP}/operator"
    # kopf's bookkeeping lives in annotations with our prefix, never in status:
    # status belongs to the state machine alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    # Silent watch stalls are a known kopf failure mode (nolar/kopf#585, #957):
    # ask the server to end each watch after 5 min and give up on a silent one.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # Every reconcile is a sync handler in kopf's thread pool; S3 reads block.
    settings.execution.max_workers = 32
    # Our own events carry the condition reasons; kopf's per-handler chatter
    # would drown them.
    settings.posting.level = logging.WARNING


def _wants_reconcile(status: kopf.Status, **_: Any) -> bool:
    return not is_terminal(status.get("phase"))


@kopf.timer(API_GROUP, API_VERSION, PLURAL, interval=RECONCILE_INTERVAL_S, when=_wants_reconcile)
def reconcile_timer(name: str, namespace: str | None, **_: Any) -> None:
    reconcile(namespace or "default", name, pod_settings())


def reconcile(namespace: str, name: str, settings: PodSettings) -> None:
    body = kube.get_job(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    job = JobView.from_body(body)
    pods = [PodView.from_pod(p) for p in kube.list_job_pods(namespace, job.uid)]
    phase = job.status.get("phase")

    progress, restore_error, credentials = None, None, None
    if not is_terminal(phase):
        secret_name = (job.storage.get("secretRef") or {}).get("name")
        if secret_name:
            credentials = storageio.credentials_from_secret(
                kube.read_secret(namespace, secret_name)
            )
        if job.status.get("workerPod") or phase == Phase.SUSPENDING.value:
            progress = storageio.read_progress(job, credentials)
        if needs_restore_check(job, progress):
            restore_error = storageio.check_restore_from(job, credentials)

    now = datetime.now(timezone.utc)
    decision = compute_decision(job, pods, progress, now, restore_error)

    if decision.status != job.status:
        try:
            kube.replace_status(body, decision.status)
        except kube.Conflict as exc:
            log.info("status not written, will decide again: %s", exc)
            return
    for pod_name in decision.delete_pods:
        kube.delete_pod(namespace, pod_name)
    for etype, reason, message in decision.events:
        kube.post_event(body, etype, reason, message)
    if decision.create_pod:
        attempt = int(decision.status["attempt"])
        try:
            kube.create_pod(namespace, build_worker_pod(job, attempt, settings))
        except kube.Rejected as exc:
            _fail_refused(namespace, name, str(exc), now)


def _fail_refused(namespace: str, name: str, message: str, now: datetime) -> None:
    body = kube.get_job(namespace, name)
    if body is None:
        return
    decision = refuse_pod_decision(JobView.from_body(body), message, now)
    try:
        kube.replace_status(body, decision.status)
    except kube.Conflict:
        return  # the next tick builds the pod again and gets the same refusal
    for etype, reason, text in decision.events:
        kube.post_event(body, etype, reason, text)
