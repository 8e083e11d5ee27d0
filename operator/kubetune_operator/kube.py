"""The one module that talks to the Kubernetes API (through the official client).

Everything else in the operator decides; this module only reads and writes.
Calls are synchronous: kopf runs sync handlers in its thread pool.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, cast

import kubernetes
from kubernetes.client.exceptions import ApiException

from kubetune_contract import API_GROUP, API_VERSION, KIND, LABEL_JOB_UID, PLURAL, SWEEP_PLURAL
from kubetune_operator.metrics import API_ERRORS, API_REQUESTS

log = logging.getLogger(__name__)

_lock = threading.Lock()
_api: kubernetes.client.ApiClient | None = None


class Rejected(Exception):
    """The API (or the client's own validation) refused an object as invalid."""


# Pod Security admission refuses a pod with 403 Forbidden and these words: like
# a 422, hopeless until the job's template changes. Other 403s (RBAC, an
# exceeded ResourceQuota) may pass later, so they stay errors that are retried.
POD_SECURITY_REFUSAL = "violates PodSecurity"


class Conflict(Exception):
    """The job changed since it was read: decide again from a fresh read."""


def api() -> kubernetes.client.ApiClient:
    global _api
    with _lock:
        if _api is None:
            configuration = kubernetes.client.Configuration()
            try:
                kubernetes.config.load_incluster_config(client_configuration=configuration)
            except kubernetes.config.ConfigException:
                kubernetes.config.load_kube_config(client_configuration=configuration)
            # One connection per reconcile thread and TokenReview, kept open.
            configuration.connection_pool_maxsize = 48
            _api = kubernetes.client.ApiClient(configuration)
        return _api


def _raw(response: Any) -> Any:
    return json.loads(_drained(response))


def _drained(response: Any) -> bytes:
    """The body of a response read with _preload_content=False, with its
    connection handed back to the pool: urllib3 keeps an unreleased one out of
    the pool, and every later request would pay a new TLS handshake."""
    try:
        return bytes(response.data)
    finally:
        response.release_conn()


@contextlib.contextmanager
def _counted(verb: str, resource: str) -> Iterator[None]:
    """Count every request (the cost of a job is measured, not guessed)."""
    API_REQUESTS.labels(verb, resource).inc()
    try:
        yield
    except ApiException as exc:
        API_ERRORS.labels(verb, resource, str(exc.status or 0)).inc()
        raise


def _get(resource: str, read: Callable[..., Any], *args: Any) -> Any:
    """The object a read returns; None when there is none (404)."""
    try:
        with _counted("get", resource):
            return _raw(read(*args, _preload_content=False))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def get_job(namespace: str, name: str) -> dict[str, Any] | None:
    objects = kubernetes.client.CustomObjectsApi(api())
    read = objects.get_namespaced_custom_object
    return cast(
        dict[str, Any] | None, _get(PLURAL, read, API_GROUP, API_VERSION, namespace, PLURAL, name)
    )


def replace_status(
    body: dict[str, Any],
    status: dict[str, Any],
    group: str = API_GROUP,
    version: str = API_VERSION,
    plural: str = PLURAL,
) -> dict[str, Any]:
    """Write an object's status in one call, guarded by the resourceVersion that
    was read, so a decision made from a stale read is never written; Conflict
    otherwise. Returns the new body. TrainableJobs unless told another kind
    (TrainableSweeps, Kueue's Workloads)."""
    meta = body["metadata"]
    objects = kubernetes.client.CustomObjectsApi(api())
    try:
        with _counted("update", f"{plural}/status"):
            return cast(
                dict[str, Any],
                _raw(
                    objects.replace_namespaced_custom_object_status(
                        group,
                        version,
                        meta["namespace"],
                        plural,
                        meta["name"],
                        {**body, "status": status},
                        _preload_content=False,
                    )
                ),
            )
    except ApiException as exc:
        if exc.status in (404, 409):
            raise Conflict(f"{meta['namespace']}/{meta['name']} changed: {exc.reason}") from exc
        raise


def create_pod(namespace: str, pod: dict[str, Any]) -> bool:
    """True when created; an existing pod of that name counts as success (idempotent)."""
    core = kubernetes.client.CoreV1Api(api())
    try:
        with _counted("create", "pods"):
            _drained(core.create_namespaced_pod(namespace, cast(Any, pod), _preload_content=False))
        return True
    except ValueError as exc:  # the client validates the pod before sending it
        raise Rejected(" ".join(str(exc).split())[:512]) from exc
    except ApiException as exc:
        if exc.status == 409:
            return False
        if exc.status in (400, 422):
            raise Rejected(_api_message(exc)) from exc
        if exc.status == 403 and POD_SECURITY_REFUSAL in _api_message(exc):
            raise Rejected(_api_message(exc)) from exc
        raise


def _merge_patch(
    group: str, version: str, plural: str, namespace: str, name: str, patch: dict[str, Any]
) -> dict[str, Any]:
    """A merge patch of a namespaced custom object; the new body."""
    objects = kubernetes.client.CustomObjectsApi(api())
    with _counted("patch", plural):
        return cast(
            dict[str, Any],
            _raw(
                objects.patch_namespaced_custom_object(
                    group, version, namespace, plural, name, patch,
                    _content_type="application/merge-patch+json", _preload_content=False,
                )
            ),
        )  # fmt: skip


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)[:512]
    except ValueError:
        return str(exc.reason)


def delete_pod(namespace: str, name: str) -> None:
    """Graceful delete: the node sends SIGTERM and waits the pod's grace period."""
    core = kubernetes.client.CoreV1Api(api())
    try:
        with _counted("delete", "pods"):
            _drained(core.delete_namespaced_pod(name, namespace, _preload_content=False))
    except ApiException as exc:
        if exc.status != 404:
            raise


def read_secret(namespace: str, name: str) -> dict[str, str] | None:
    core = kubernetes.client.CoreV1Api(api())
    secret = _get("secrets", core.read_namespaced_secret, name, namespace)
    if secret is None:
        return None
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def post_event(body: dict[str, Any], etype: str, reason: str, message: str) -> None:
    """A core/v1 Event on the job; losing one is logged, never fatal."""
    meta = body["metadata"]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": etype,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "kubetune-operator"},
        "reportingComponent": "kubetune-operator",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    core = kubernetes.client.CoreV1Api(api())
    try:
        with _counted("create", "events"):
            _drained(
                core.create_namespaced_event(
                    meta["namespace"], cast(Any, event), _preload_content=False
                )
            )
    except ApiException as exc:
        log.warning("could not post event %s on %s: %s", reason, meta["name"], exc.reason)


def remove_finalizer(namespace: str, name: str, finalizers: list[str], finalizer: str) -> None:
    """Drop a finalizer an earlier operator version put on a job (a JSON patch
    guarded by a test of the list, so a concurrent change is not overwritten)."""
    objects = kubernetes.client.CustomObjectsApi(api())
    index = finalizers.index(finalizer)
    ops = [
        {"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizer},
        {"op": "remove", "path": f"/metadata/finalizers/{index}"},
    ]
    try:
        with _counted("patch", PLURAL):
            response = objects.patch_namespaced_custom_object(
                API_GROUP,
                API_VERSION,
                namespace,
                PLURAL,
                name,
                ops,
                _content_type="application/json-patch+json",
                _preload_content=False,
            )
            _drained(response)
    except ApiException as exc:
        if exc.status not in (404, 409, 422):
            raise


def review_token(token: str, audience: str) -> dict[str, Any]:
    """The TokenReview status of a bearer token for our audience (authenticated,
    user, audiences). The API server checks signature, expiry, audience and
    that the pod the token is bound to still exists."""
    auth = kubernetes.client.AuthenticationV1Api(api())
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": [audience]},
    }
    with _counted("create", "tokenreviews"):
        response = auth.create_token_review(cast(Any, review), _preload_content=False)
    return cast(dict[str, Any], _raw(response).get("status") or {})


# Objects of other APIs (with --kueue: Kueue's Workloads, and the cluster-scoped
# objects their admission names). Where the API serves them is the caller's word.


def serves(group: str, version: str) -> bool:
    """Whether the API server serves this API group version (its CRDs are installed)."""
    with _counted("get", "discovery"):
        groups = _raw(kubernetes.client.ApisApi(api()).get_api_versions(_preload_content=False))
    return any(
        g.get("name") == group and any(v.get("version") == version for v in g.get("versions") or [])
        for g in groups.get("groups") or []
    )


def get_cluster_object(name: str, group: str, version: str, plural: str) -> dict[str, Any] | None:
    """A cluster-scoped custom object (a Kueue ResourceFlavor or
    WorkloadPriorityClass); None when there is none."""
    read = kubernetes.client.CustomObjectsApi(api()).get_cluster_custom_object
    return cast(dict[str, Any] | None, _get(plural, read, group, version, plural, name))


def create_object(
    body: dict[str, Any], group: str, version: str, plural: str
) -> dict[str, Any] | None:
    """A namespaced custom object, created; None when one of that name exists
    already (creation is idempotent); Rejected when the API refuses it as invalid."""
    objects = kubernetes.client.CustomObjectsApi(api())
    namespace = body["metadata"]["namespace"]
    try:
        with _counted("create", plural):
            return cast(
                dict[str, Any],
                _raw(
                    objects.create_namespaced_custom_object(
                        group, version, namespace, plural, body, _preload_content=False
                    )
                ),
            )
    except ApiException as exc:
        if exc.status == 409:
            return None
        if exc.status in (400, 422):
            raise Rejected(_api_message(exc)) from exc
        raise


def delete_object(
    namespace: str, name: str, uid: str, group: str, version: str, plural: str
) -> None:
    """Only that object (uid precondition), never a newer one of the same name."""
    objects = kubernetes.client.CustomObjectsApi(api())
    try:
        with _counted("delete", plural):
            _drained(
                objects.delete_namespaced_custom_object(
                    group,
                    version,
                    namespace,
                    plural,
                    name,
                    body=cast(Any, {"preconditions": {"uid": uid}}),
                    _preload_content=False,
                )
            )
    except ApiException as exc:
        if exc.status not in (404, 409):
            raise


def patch_object(
    body: dict[str, Any], changes: dict[str, Any], group: str, version: str, plural: str
) -> dict[str, Any]:
    """A merge patch of `changes` (outside metadata), guarded by the
    resourceVersion they were decided from; the new body. Conflict otherwise."""
    meta = body["metadata"]
    patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, **changes}
    try:
        return _merge_patch(group, version, plural, meta["namespace"], meta["name"], patch)
    except ApiException as exc:
        if exc.status in (404, 409):
            kind = body.get("kind") or plural
            raise Conflict(f"{kind} {meta['name']} changed: {exc.reason}") from exc
        raise


def job_has_pods(namespace: str, job_uid: str) -> bool:
    """A fresh read (not the cache) of whether any pod of the job exists: the
    last check before a queued job's quota goes back to Kueue."""
    core = kubernetes.client.CoreV1Api(api())
    with _counted("list", "pods"):
        found = _raw(
            core.list_namespaced_pod(
                namespace,
                label_selector=f"{LABEL_JOB_UID}={job_uid}",
                limit=1,
                _preload_content=False,
            )
        )
    return bool(found.get("items"))


# TrainableSweeps: their trials (child TrainableJobs) and their status.


def create_job(body: dict[str, Any]) -> dict[str, Any] | None:
    """A trial; None when one of that name exists already (creation is idempotent)."""
    return create_object(body, API_GROUP, API_VERSION, PLURAL)


def patch_job(namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    """A merge patch of a trial the sweep owns (its annotations, spec.suspend)."""
    return _merge_patch(API_GROUP, API_VERSION, PLURAL, namespace, name, patch)


def replace_sweep_status(body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return replace_status(body, status, plural=SWEEP_PLURAL)
