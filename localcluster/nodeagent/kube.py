"""A thin JSON layer over the official Kubernetes client's transport: the node
agent speaks in plain dicts (the shapes the API documents) and streams watch
events, without building a typed model for every object it touches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import urllib3
from kubernetes import client, config

SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


class KubeError(Exception):
    """An API call answered with a non-2xx status."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        self.status = status
        self.body = body
        try:
            message = json.loads(body).get("message", body)
        except ValueError:
            message = body
        super().__init__(f"{status} {reason}: {message}")


class Kube:
    def __init__(self, kubeconfig: str) -> None:
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        self.api = client.ApiClient(cfg)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float] = 30,
        stream: bool = False,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        url_path = path
        if query:
            url_path += "?" + "&".join(
                f"{k}={quote(str(v), safe='')}" for k, v in query.items() if v is not None
            )
        _, url, headers, data, _ = self.api.param_serialize(
            method=method,
            resource_path=url_path,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            resp = self.api.call_api(method, url, headers, data, _request_timeout=timeout)
        except urllib3.exceptions.HTTPError as err:
            # The apiserver is away (restarting, its etcd down): a KubeError like
            # any other, so the callers' retries handle it. Uncaught, it killed the
            # agent's heartbeat thread and failed every pod it was reporting on.
            raise KubeError(0, "Unreachable", str(err)) from err
        if stream and 200 <= resp.status < 300:
            return resp.response
        raw = resp.read()
        if not 200 <= resp.status < 300:
            raise KubeError(resp.status, resp.reason or "", raw.decode(errors="replace"))
        return json.loads(raw) if raw else None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query or None)

    def create(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Any, content_type: str = SMP) -> Any:
        return self.request("PATCH", path, body, content_type=content_type)

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PUT", path, body)

    def delete(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("DELETE", path, body)

    def watch(
        self, path: str, resource_version: str, timeout_s: int = 300, **query: Any
    ) -> Iterator[dict[str, Any]]:
        """Yields watch events until the server closes the stream (or it breaks)."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_s,
            **query,
        }
        resp = self.request("GET", path, query=params, timeout=(10, timeout_s + 30), stream=True)
        try:
            buf = b""
            for chunk in resp.stream(64 * 1024, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            resp.release_conn()
