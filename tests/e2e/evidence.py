"""Keeps what an end-to-end run shows, for the secret-leak check at its end.

Pods' logs live under `.cluster/pods/` only as long as their pods (the node
agent removes a pod's folder with it), and events and TrainableJobs go with
their test namespaces. So, for the whole run, this keeps:

- every container log: a hard link under `.cluster/logs/e2e-pods/`, made as
  soon as the file appears, keeps all of it (the process still appends to
  the same file) after the pod's folder is gone;
- every event and every TrainableJob status the API server showed, one JSON
  object a line in `.cluster/logs/e2e-objects.jsonl`;
- the values of every Opaque Secret created meanwhile (they are what the
  check looks for), through `secret_scan.register_secret_value` and in
  `.cluster/e2e-secret-values.json`, outside the folders the check reads: the
  run's parallel phase and its serial phase are two processes, and the scan
  ends the second.

A pod that comes and goes within one poll (0.5 s) can escape the log keeper.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from secret_scan import register_secret_value
from urllib3.exceptions import HTTPError

log = logging.getLogger(__name__)

POLL_S = 0.5


class EvidenceKeeper:
    def __init__(self, state: Path) -> None:
        self.pods = state / "pods"
        self.kept_logs = state / "logs" / "e2e-pods"
        self.objects = state / "logs" / "e2e-objects.jsonl"
        self.kubeconfig = state / "kubeconfig"
        self.secret_values = state / "e2e-secret-values.json"
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        # Folders are made when there is something to keep: `localcluster up`
        # may make the state folder afresh after this starts.
        thread = threading.Thread(target=self._keep_logs, name="evidence-logs", daemon=True)
        thread.start()
        self._threads.append(thread)
        self._watch_api()

    def close(self) -> None:
        self.stop.set()
        # The watches end at their next event or timeout; they are daemons.
        self._threads[0].join(timeout=5)
        self._keep_logs_once()

    # Container logs -------------------------------------------------------

    def _keep_logs(self) -> None:
        while not self.stop.wait(POLL_S):
            self._keep_logs_once()

    def _keep_logs_once(self) -> None:
        # Listed level by level: a pod's folder removed mid-listing skips that pod
        # (Path.glob raised, which ended this thread and the logs it would keep).
        logs = (
            log_file
            for pod in _entries(self.pods)
            for container in _entries(pod)
            for log_file in _entries(container)
            if log_file.suffix == ".log"
        )
        for path in logs:
            kept = self.kept_logs / path.relative_to(self.pods)
            if kept.exists():
                continue
            kept.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, kept)
            except FileNotFoundError:
                pass  # the pod went between the glob and the link
            except OSError as exc:
                log.warning("cannot keep %s for the secret-leak check: %s", path, exc)

    # Events, job statuses and Secrets ------------------------------------

    def _watch_api(self) -> None:
        def events(api: client.ApiClient) -> Callable[..., Any]:
            return client.CoreV1Api(api).list_event_for_all_namespaces

        def secrets(api: client.ApiClient) -> Callable[..., Any]:
            return client.CoreV1Api(api).list_secret_for_all_namespaces

        def jobs(api: client.ApiClient) -> Callable[..., Any]:
            return functools.partial(
                client.CustomObjectsApi(api).list_cluster_custom_object,
                "kubetune.io",
                "v1alpha1",
                "trainablejobs",
            )

        for lister, handle in (
            (events, self._record_event),
            (secrets, self._register_secret),
            (jobs, self._record_job),
        ):
            thread = threading.Thread(target=self._follow, args=(lister, handle), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _connect(self) -> client.ApiClient | None:
        """The cluster's API, once its kubeconfig exists (the run may start it)."""
        while not self.stop.is_set():
            if self.kubeconfig.exists():
                with contextlib.suppress(Exception):
                    return config.new_client_from_config(config_file=str(self.kubeconfig))
            self.stop.wait(2)
        return None

    def _follow(
        self,
        lister_of: Callable[[client.ApiClient], Callable[..., Any]],
        handle: Callable[[Any], None],
    ) -> None:
        """List once, then watch on from the last version seen; connect and
        list again only when the watch fails (an expired version, a cluster
        started again)."""
        version, lister = "", None
        while not self.stop.is_set():
            try:
                if not version:
                    api = self._connect()
                    if api is None:
                        return
                    lister = lister_of(api)
                    body = json.loads(lister(_preload_content=False).data)
                    for item in body.get("items") or []:
                        handle(item)
                    version = body["metadata"]["resourceVersion"]
                w = watch.Watch()
                for event in w.stream(lister, resource_version=version, timeout_seconds=30):
                    obj = event["raw_object"]
                    if event["type"] == "ERROR":
                        version = ""  # 410 Gone: list again
                        break
                    version = obj["metadata"]["resourceVersion"]
                    handle(obj)
                    if self.stop.is_set():
                        w.stop()
            except (ApiException, HTTPError, OSError, ValueError, KeyError) as exc:
                log.debug("evidence watch restarts: %s", exc)
                version = ""
                self.stop.wait(1)

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True)
        self.objects.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self.objects.open("a") as fh:
            fh.write(line + "\n")

    def _record_event(self, event: dict[str, Any]) -> None:
        meta = event.get("metadata") or {}
        involved = event.get("involvedObject") or {}
        self._write(
            {
                "event": f"{meta.get('namespace')}/{meta.get('name')}",
                "object": f"{involved.get('kind')}/{involved.get('name')}",
                "reason": event.get("reason"),
                "message": event.get("message"),
            }
        )

    def _record_job(self, job: dict[str, Any]) -> None:
        meta = job.get("metadata") or {}
        self._write(
            {
                "trainablejob": f"{meta.get('namespace')}/{meta.get('name')}",
                "status": job.get("status"),
            }
        )

    def _register_secret(self, secret: dict[str, Any]) -> None:
        if secret.get("type") != "Opaque":
            return  # tokens, Helm's release records: not credentials a job carries
        values = set()
        for value in (secret.get("data") or {}).values():
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                values.add(register_secret_value(base64.b64decode(value).decode()))
        with self._lock:
            kept = self.kept_secret_values()
            if values - kept:
                self.secret_values.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.secret_values, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    json.dump(sorted(kept | values), fh)

    def kept_secret_values(self) -> set[str]:
        """Every value registered by this run's phases (and earlier runs')."""
        try:
            return set(json.loads(self.secret_values.read_text()))
        except FileNotFoundError:
            return set()


def _entries(folder: Path) -> list[Path]:
    """The entries of `folder`, none if it is gone or is not a folder."""
    try:
        return list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
