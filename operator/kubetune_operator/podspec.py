"""Builds the worker pod of a TrainableJob attempt.

Pure: reads no environment, clock or API; everything it needs is in its
arguments, so the same job and settings always give the same pod.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from kubetune_contract import (
    API_GROUP,
    API_VERSION,
    KIND,
    LABEL_ATTEMPT,
    LABEL_JOB,
    LABEL_JOB_UID,
    PROGRESS_AUDIENCE,
    PROGRESS_CA_FILE_ENV,
    PROGRESS_TOKEN_FILE_ENV,
    PROGRESS_URL_ENV,
    TERMINATION_MESSAGE_PATH,
    WORKER_CONTAINER,
    WORKER_SPEC_ENV,
    WorkerSpec,
)
from kubetune_operator.model import JobView, worker_pod_name

# Names of the environment variables the operator owns in the worker container:
# a template may not override them, or the worker would run another job's settings.
_SECRET_ENV = (
    ("AWS_ACCESS_KEY_ID", False),
    ("AWS_SECRET_ACCESS_KEY", False),
    ("AWS_SESSION_TOKEN", True),
    ("AWS_DEFAULT_REGION", True),
)


@dataclass(frozen=True)
class PodSettings:
    default_image: str = "kubetune:0.1.0"
    # Long enough for a worker to finish its step and upload a checkpoint after
    # SIGTERM; a template's own terminationGracePeriodSeconds wins.
    termination_grace_seconds: int = 120
    command: tuple[str, ...] = ("kubetune-worker",)
    # Where the worker pushes its progress (the operator's endpoint); empty:
    # the worker only writes its progress file and the operator polls it.
    progress_url: str = ""
    progress_ca_file: str = ""


# The worker's identity for progress reports: a projected service-account token
# for our audience only (the API server refuses it as an API credential), bound
# to the pod, rotated by the kubelet.
PROGRESS_TOKEN_VOLUME = "kubetune-progress-token"
PROGRESS_TOKEN_DIR = "/var/run/secrets/kubetune.io/progress"
PROGRESS_TOKEN_SECONDS = 3600


def build_worker_spec(job: JobView) -> WorkerSpec:
    storage = job.storage
    return WorkerSpec(
        trainable=job.spec.get("trainable") or "",
        code=dict(job.spec["code"]) if job.spec.get("code") else None,
        run_uri=job.run_uri,
        run_id=job.uid,
        config=dict(job.spec.get("config") or {}),
        stop=dict(job.spec.get("stop") or {}),
        checkpoint=dict(job.spec.get("checkpoint") or {}),
        restore_from=job.spec.get("restoreFrom"),
        endpoint_url=storage.get("endpointURL"),
    )


def _owner_reference(job: JobView) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": job.name,
        "uid": job.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _worker_env(job: JobView, settings: PodSettings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": WORKER_SPEC_ENV, "value": build_worker_spec(job).to_env()},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if settings.progress_url:
        env.append({"name": PROGRESS_URL_ENV, "value": settings.progress_url})
        env.append({"name": PROGRESS_TOKEN_FILE_ENV, "value": f"{PROGRESS_TOKEN_DIR}/token"})
        if settings.progress_ca_file:
            env.append({"name": PROGRESS_CA_FILE_ENV, "value": settings.progress_ca_file})
    storage = job.storage
    if storage.get("endpointURL"):
        env.append({"name": "AWS_ENDPOINT_URL", "value": storage["endpointURL"]})
    secret = (storage.get("secretRef") or {}).get("name")
    if secret:
        for key, optional in _SECRET_ENV:
            ref = {"name": secret, "key": key, "optional": optional}
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return env


# The restricted Pod Security Standard, as defaults: a worker pod is admitted in
# a namespace that enforces `restricted`. The image runs as a numeric non-root
# user (Dockerfile), so runAsNonRoot needs no runAsUser; an image whose USER is
# a name or root sets runAsUser (or runAsNonRoot: false) in its template.
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def merge_security_context(
    defaults: dict[str, Any], theirs: dict[str, Any] | None
) -> dict[str, Any]:
    """A template's securityContext wins field by field over the defaults.

    A field the template sets replaces ours whole (a seccompProfile's type and
    localhostProfile go together), except `capabilities`, whose `add` and `drop`
    are taken one by one: adding NET_BIND_SERVICE keeps `drop: [ALL]`. A field
    set to null removes our default.
    """
    merged = copy.deepcopy(defaults)
    for key, value in (theirs or {}).items():
        if key == "capabilities" and isinstance(value, dict):
            caps = dict(merged.get("capabilities") or {})
            caps.update(copy.deepcopy(value))
            value = {k: v for k, v in caps.items() if v is not None}
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _with_container_defaults(container: dict[str, Any]) -> dict[str, Any]:
    secured = dict(container)
    secured["securityContext"] = merge_security_context(
        CONTAINER_SECURITY_CONTEXT, container.get("securityContext")
    )
    return secured


def _quantities_as_strings(resources: dict[str, Any]) -> dict[str, Any]:
    """`nvidia.com/gpu: 1` and `"1"` mean the same; the API's canonical form is a string."""
    return {
        group: {name: str(value) for name, value in (amounts or {}).items()}
        if group in ("limits", "requests")
        else amounts
        for group, amounts in resources.items()
    }


def _merge_worker_container(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """The template's `worker` container adds to ours; what the operator owns stays ours."""
    merged = copy.deepcopy(theirs)
    owned_env = {e["name"] for e in ours["env"]}
    extra_env = [e for e in theirs.get("env") or [] if e["name"] not in owned_env]
    merged_env = list(ours["env"]) + extra_env
    merged.update(
        {k: v for k, v in ours.items() if k not in ("env", "resources", "securityContext")}
    )
    merged["env"] = merged_env
    owned_mounts = {m["name"] for m in ours.get("volumeMounts") or []}
    merged_mounts = list(ours.get("volumeMounts") or []) + [
        m for m in theirs.get("volumeMounts") or [] if m.get("name") not in owned_mounts
    ]
    if merged_mounts:
        merged["volumeMounts"] = merged_mounts
    merged["resources"] = ours.get("resources") or _quantities_as_strings(
        theirs.get("resources") or {}
    )
    return merged


def build_worker_pod(job: JobView, attempt: int, settings: PodSettings) -> dict[str, Any]:
    """The pod for one attempt of a job: deterministic name, owned by the job."""
    template = copy.deepcopy(job.spec.get("template") or {})
    tmeta = template.get("metadata") or {}
    tspec = template.get("spec") or {}

    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": job.spec.get("image") or settings.default_image,
        "command": list(settings.command),
        "env": _worker_env(job, settings),
        "resources": _quantities_as_strings(job.spec.get("resources") or {}),
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if settings.progress_url:
        container["volumeMounts"] = [
            {"name": PROGRESS_TOKEN_VOLUME, "mountPath": PROGRESS_TOKEN_DIR, "readOnly": True}
        ]
    containers = []
    for c in tspec.get("containers") or []:
        if c.get("name") == WORKER_CONTAINER:
            container = _merge_worker_container(container, c)
        else:
            containers.append(c)  # sidecars ride along (with the security defaults below)
    containers.insert(0, container)
    # Every container, sidecars and init containers too: restricted admission
    # refuses the whole pod for any one of them.
    containers = [_with_container_defaults(c) for c in containers]

    labels = dict(tmeta.get("labels") or {})
    labels.update(
        {
            LABEL_JOB: job.name,
            LABEL_JOB_UID: job.uid,
            LABEL_ATTEMPT: str(attempt),
            "app.kubernetes.io/name": "kubetune",
            "app.kubernetes.io/component": "worker",
            "app.kubernetes.io/managed-by": "kubetune-operator",
        }
    )
    spec = {k: v for k, v in tspec.items() if k != "containers"}
    spec["containers"] = containers
    if tspec.get("initContainers"):
        spec["initContainers"] = [_with_container_defaults(c) for c in tspec["initContainers"]]
    spec["securityContext"] = merge_security_context(
        POD_SECURITY_CONTEXT, tspec.get("securityContext")
    )
    if settings.progress_url:
        volumes = [v for v in spec.get("volumes") or [] if v.get("name") != PROGRESS_TOKEN_VOLUME]
        volumes.append(_progress_token_volume())
        spec["volumes"] = volumes
    # The operator restarts failed workers itself, from the latest checkpoint.
    spec["restartPolicy"] = "Never"
    # Least privilege: the worker talks to S3, never to the Kubernetes API.
    spec.setdefault("automountServiceAccountToken", False)
    spec.setdefault("terminationGracePeriodSeconds", settings.termination_grace_seconds)

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": worker_pod_name(job.name, attempt),
            "namespace": job.namespace,
            "labels": labels,
            "annotations": dict(tmeta.get("annotations") or {}),
            "ownerReferences": [_owner_reference(job)],
        },
        "spec": spec,
    }


def _progress_token_volume() -> dict[str, Any]:
    token = {
        "audience": PROGRESS_AUDIENCE,
        "expirationSeconds": PROGRESS_TOKEN_SECONDS,
        "path": "token",
    }
    return {
        "name": PROGRESS_TOKEN_VOLUME,
        "projected": {"sources": [{"serviceAccountToken": token}]},
    }
