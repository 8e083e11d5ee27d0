"""The client's one door to the Kubernetes API: the kubeconfig found as kubectl
finds it (KUBECONFIG, ~/.kube/config, or the pod's service account), and the
few calls the client makes on TrainableJobs and their worker pods."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import urllib3

from kubetune.sdk.errors import KubetuneError
from kubetune_contract import API_GROUP, API_VERSION, KIND, LABEL_SWEEP, PLURAL, SWEEP_PLURAL

LABEL_JOB = "kubetune.io/job"
WORKER_CONTAINER = "worker"


class ClusterError(KubetuneError):
    """The cluster refused or could not be reached; the message says which and why."""


def _message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(getattr(exc, "reason", exc))


@dataclass
class Kube:
    """Clients built from one kubeconfig (None: KUBECONFIG or ~/.kube/config,
    then the in-cluster service account), and its current namespace."""

    api: Any
    namespace: str

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        from kubernetes import client, config

        try:
            config.load_kube_config(config_file=kubeconfig, context=context)
            _, active = config.list_kube_config_contexts(config_file=kubeconfig)
            if context:
                contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
                active = next((c for c in contexts if c["name"] == context), active)
            namespace = (active or {}).get("context", {}).get("namespace") or "default"
        except config.ConfigException as exc:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                raise ClusterError(
                    f"no Kubernetes configuration found ({exc}): set KUBECONFIG or pass "
                    "kubeconfig=, as for kubectl"
                ) from None
            namespace = _incluster_namespace()
        return cls(client.ApiClient(), namespace)

    def _objects(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.rest import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"{what}: not found") from None
            raise ClusterError(f"{what}: {_message(exc)}") from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:  # refused, reset, retries spent
            raise ClusterError(f"{unreachable(exc)} ({what})") from None

    # TrainableJobs

    def _custom(
        self, what: str, verb: str, namespace: str, plural: str, *args: Any, **kwargs: Any
    ) -> Any:
        """One `{verb}_namespaced_custom_object` call on our API group, its errors
        turned into NotFound or ClusterError naming `what`."""
        method = getattr(self._objects(), f"{verb}_namespaced_custom_object")
        return self._call(what, method, API_GROUP, API_VERSION, namespace, plural, *args, **kwargs)

    def _create(
        self, kind: str, plural: str, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        what = f"creating {kind} {namespace}/{body['metadata']['name']}"
        return cast(dict[str, Any], self._custom(what, "create", namespace, plural, body))

    def _get(self, kind: str, plural: str, namespace: str, name: str) -> dict[str, Any]:
        what = f"{kind} {namespace}/{name}"
        return cast(dict[str, Any], self._custom(what, "get", namespace, plural, name))

    def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._create(KIND, PLURAL, namespace, body)

    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        return self._get(KIND, PLURAL, namespace, name)

    def list_jobs(self, namespace: str) -> list[dict[str, Any]]:
        found = self._custom(f"TrainableJobs in {namespace}", "list", namespace, PLURAL)
        return list(found.get("items") or [])

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        what = f"patching TrainableJob {namespace}/{name}"
        return cast(dict[str, Any], self._custom(what, "patch", namespace, PLURAL, name, patch))

    def delete_job(self, namespace: str, name: str) -> None:
        self._custom(f"deleting TrainableJob {namespace}/{name}", "delete", namespace, PLURAL, name)

    def watch_job(
        self, namespace: str, name: str, resource_version: str, timeout_s: int, plural: str = PLURAL
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, body) events of one job (or sweep) from resource_version on, for
        at most timeout_s; ends early (without error) when the server ends the watch."""
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        stream = watch.Watch().stream(
            self._objects().list_namespaced_custom_object,
            API_GROUP, API_VERSION, namespace, plural,
            field_selector=f"metadata.name={name}",
            resource_version=resource_version,
            timeout_seconds=max(1, timeout_s),
        )  # fmt: skip
        try:
            for event in stream:
                yield str(event["type"]), cast(dict[str, Any], event["object"])
        except ApiException as exc:
            if exc.status != 410:  # 410: history gone; the caller reads afresh
                what = f"watching {plural} {namespace}/{name}"
                raise ClusterError(f"{what}: {_message(exc)}") from None

    # sweeps (kubetune.Tuner)

    def create_sweep(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._create("TrainableSweep", SWEEP_PLURAL, namespace, body)

    def get_sweep(self, namespace: str, name: str) -> dict[str, Any]:
        return self._get("TrainableSweep", SWEEP_PLURAL, namespace, name)

    def trials(self, namespace: str, sweep: str) -> list[dict[str, Any]]:
        found = self._custom(
            f"trials of TrainableSweep {namespace}/{sweep}", "list", namespace, PLURAL,
            label_selector=f"{LABEL_SWEEP}={sweep}",
        )  # fmt: skip
        return list(found.get("items") or [])

    # worker pods

    def job_pods(self, namespace: str, job: str) -> tuple[list[Any], str]:
        """The job's worker pods and the resourceVersion of that listing."""
        found = self._call(
            f"pods of {namespace}/{job}",
            self._core().list_namespaced_pod,
            namespace,
            label_selector=f"{LABEL_JOB}={job}",
        )
        return list(found.items), str(found.metadata.resource_version or "")

    def await_pod_change(
        self, namespace: str, job: str, resource_version: str, timeout_s: int
    ) -> None:
        """Returns at the first change of the job's pods after resource_version,
        or after timeout_s (a watch, not a polling loop)."""
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        watcher = watch.Watch()
        stream = watcher.stream(
            self._core().list_namespaced_pod,
            namespace,
            label_selector=f"{LABEL_JOB}={job}",
            resource_version=resource_version,
            timeout_seconds=max(1, timeout_s),
        )
        try:
            for _ in stream:
                return
        except ApiException as exc:
            if exc.status != 410:
                raise ClusterError(f"watching pods of {namespace}/{job}: {_message(exc)}") from None
        except (OSError, urllib3.exceptions.HTTPError):
            return  # the caller reads afresh
        finally:
            watcher.stop()
            stream.close()

    def pod_log_lines(self, namespace: str, pod: str, follow: bool) -> Iterator[str]:
        """The worker container's log, line by line; with follow, until it ends."""
        response = self._call(
            f"logs of pod {namespace}/{pod}",
            self._core().read_namespaced_pod_log,
            pod,
            namespace,
            container=WORKER_CONTAINER,
            follow=follow,
            _preload_content=False,
        )
        pending = b""
        try:
            for chunk in response.stream(4096, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            if pending:
                yield pending.decode(errors="replace")
        finally:
            response.release_conn()


class NotFound(ClusterError):
    """The object does not exist (any more)."""


def unreachable(exc: BaseException) -> str:
    """One line naming the API server a connection error could not reach."""
    reason: Any = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
    # drop urllib3's "HTTPSConnection(host=..., port=...): " or "<... object at 0x...>: "
    text = re.sub(r"^(\w+\(.*?\)|<.*?>): ", "", str(reason))
    pool = getattr(exc, "pool", None)
    where = f" at {pool.host}:{pool.port}" if pool is not None else ""
    return f"the API server{where} cannot be reached: {text}"


def _incluster_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as fh:
            return fh.read().strip() or "default"
    except OSError:
        return "default"
