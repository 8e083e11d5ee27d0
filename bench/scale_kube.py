"""A small asyncio Kubernetes client for the scale benchmark (aiohttp, which
kopf already brings): thousands of creates, watches and token requests from
one process without a thread each.

It reads the local cluster's kubeconfig (server, CA file, bearer token), and
knows just what the benchmark needs: JSON requests, paged lists, watches that
resume from their resourceVersion, TokenRequest, and the raw /metrics text.
Also what the benchmark's cluster-facing processes (loadgen, scale_watch)
share: their --kubeconfig/--namespace flags and how they run until stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

try:  # faster decoding of big watch streams where orjson is installed (it is a dependency)
    import orjson

    def _loads(data: bytes) -> Any:
        return orjson.loads(data)

except ImportError:  # pragma: no cover

    def _loads(data: bytes) -> Any:
        return json.loads(data)


def cluster_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A bench process's parser with the flags that find the local cluster."""
    repo = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--kubeconfig", default=str(repo / ".cluster" / "kubeconfig"))
    p.add_argument("--namespace", required=True)
    return p


async def run_until_stopped(
    tasks: list[asyncio.Task[Any]], close: Callable[[], Awaitable[None]], who: str
) -> int:
    """Runs `tasks` until one ends or SIGTERM/SIGINT comes, cancels them all and
    awaits close(): 1 (the error printed, after `who`) if a task failed, else 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    for task in [*tasks, stopper]:
        task.cancel()
    await close()
    for task in done:
        if task is not stopper and task.exception() is not None:
            print(f"{who}: {task.exception()!r}", file=sys.stderr)
            return 1
    return 0


class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else str(body)[:300]
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class KubeConfig:
    server: str
    ca_file: str
    token: str

    @classmethod
    def load(cls, path: Path) -> KubeConfig:
        doc = yaml.safe_load(path.read_text())
        ctx_name = doc.get("current-context")
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
        return cls(cluster["server"], cluster["certificate-authority"], user["token"])


class Kube:
    """One aiohttp session to the apiserver; `limit` caps concurrent connections."""

    def __init__(self, config: KubeConfig, limit: int = 64) -> None:
        self.config = config
        self.limit = limit
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            ssl_ctx = ssl.create_default_context(cafile=self.config.ca_file)
            self._session = aiohttp.ClientSession(
                base_url=self.config.server,
                headers={"Authorization": f"Bearer {self.config.token}"},
                connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=self.limit),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        ok: tuple[int, ...] = (200, 201, 202),
        timeout: float = 60,
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session.request(
            method,
            path,
            data=data,
            params=params,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            raw = await resp.read()
            try:
                parsed = _loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode(errors="replace")
            if resp.status not in ok:
                raise ApiError(resp.status, method, path, parsed)
            return parsed

    async def text(self, path: str, timeout: float = 60) -> str:
        async with self.session.get(path, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise ApiError(resp.status, "GET", path, body)
            return body

    async def list_all(
        self, path: str, params: dict[str, str] | None = None, page: int = 500
    ) -> tuple[list[dict[str, Any]], str]:
        """Every item (paged), and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        query = dict(params or {}, limit=str(page))
        while True:
            body = await self.request("GET", path, params=query)
            items.extend(body.get("items") or [])
            cont = (body.get("metadata") or {}).get("continue")
            if not cont:
                return items, body["metadata"].get("resourceVersion", "")
            query["continue"] = cont

    async def watch(
        self,
        path: str,
        params: dict[str, str] | None = None,
        resource_version: str | None = None,
    ) -> AsyncIterator[tuple[float, str, dict[str, Any]]]:
        """(receive time, event type, object) forever, from `resource_version`
        (or a fresh list, whose items come first as ADDED). Reconnects from the
        last resourceVersion seen; on 410 Gone it lists again (type RELIST first)."""
        rv = resource_version
        if rv is None:
            items, rv = await self.list_all(path, params)
            now = time.time()
            for item in items:
                yield now, "ADDED", item
        while True:
            query = dict(
                params or {},
                watch="1",
                allowWatchBookmarks="true",
                timeoutSeconds="300",
                resourceVersion=rv,
            )
            gone = False
            try:
                async with self.session.get(
                    path, params=query, timeout=aiohttp.ClientTimeout(total=None, sock_read=360)
                ) as resp:
                    if resp.status == 410:
                        gone = True
                    elif resp.status != 200:
                        raise ApiError(resp.status, "WATCH", path, await resp.text())
                    else:
                        buf = b""
                        async for chunk in resp.content.iter_any():
                            now = time.time()
                            buf += chunk
                            *lines, buf = buf.split(b"\n")
                            for line in lines:
                                if not line.strip():
                                    continue
                                event = _loads(line)
                                etype, obj = event.get("type"), event.get("object") or {}
                                if etype == "ERROR":
                                    if obj.get("code") == 410:
                                        gone = True
                                        break
                                    raise ApiError(obj.get("code", 0), "WATCH", path, obj)
                                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                                if etype != "BOOKMARK":
                                    yield now, etype, obj
                            if gone:
                                break
            except (aiohttp.ClientError, asyncio.TimeoutError):
                await asyncio.sleep(0.5)
            if gone:
                items, rv = await self.list_all(path, params)
                now = time.time()
                yield now, "RELIST", {}
                for item in items:
                    yield now, "ADDED", item

    async def token_request(
        self,
        namespace: str,
        service_account: str,
        pod_name: str,
        pod_uid: str,
        audience: str,
        seconds: int = 3600,
    ) -> str:
        """A token bound to the pod, as the kubelet asks for a projected token."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience],
                "expirationSeconds": seconds,
                "boundObjectRef": {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "name": pod_name,
                    "uid": pod_uid,
                },
            },
        }
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
        out = await self.request("POST", path, body=body)
        return str(out["status"]["token"])

    async def patch_merge(self, path: str, body: Any) -> Any:
        return await self.request(
            "PATCH", path, body=body, content_type="application/merge-patch+json"
        )
