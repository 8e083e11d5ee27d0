"""The progress endpoint's checks: tokens (missing, refused, of a pod that is
not a worker, of another job's pod, stale), oversized and malformed bodies,
and a flood from one pod rate-limited without touching others."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from operator_factories import progress_doc, worker_pod

from kubetune_operator.cache import ClusterCache, WorkerPod
from kubetune_operator.progress_api import (
    MAX_BODY,
    PATH,
    ProgressReceiver,
    RateLimiter,
    TokenCache,
    pod_uid_from_review,
    token_expiry,
)

AUD = "kubetune.io/progress"


def review_for(pod_uid: str) -> dict[str, Any]:
    return {
        "authenticated": True,
        "audiences": [AUD],
        "user": {
            "username": "system:serviceaccount:ns:default",
            "extra": {"authentication.kubernetes.io/pod-uid": [pod_uid]},
        },
    }


def doc(run_id: str, iteration: int = 1) -> bytes:
    return orjson.dumps(progress_doc(run_id, iteration))


class World:
    def __init__(self) -> None:
        self.cache = ClusterCache()
        for name, uid in (("a", "job-a"), ("b", "job-b")):
            self.cache.put_job({"metadata": {"name": name, "namespace": "ns", "uid": uid}})
        self.cache.put_pod(worker_pod("a-worker-1", "pa", "a", "job-a"))
        self.cache.put_pod(worker_pod("b-worker-1", "pb", "b", "job-b"))
        # A pod in another namespace labelled as a's worker: not a's.
        forged = worker_pod("x", "px", "a", "job-a")
        forged["metadata"]["namespace"] = "other"
        self.cache.put_pod(forged)
        # token -> review status; "stale" is what the API answers for a token
        # whose pod was deleted: not authenticated.
        self.tokens = {"tok-a": review_for("pa"), "tok-b": review_for("pb")}
        self.tokens["tok-stranger"] = review_for("p-unknown")
        self.tokens["tok-forged-pod"] = review_for("px")
        self.tokens["tok-wrong-aud"] = {**review_for("pa"), "audiences": ["https://kubernetes"]}
        self.reviews: list[str] = []
        self.reports: list[tuple[str, bytes]] = []

    async def review(self, token: str) -> dict[str, Any]:
        self.reviews.append(token)
        return self.tokens.get(token, {"authenticated": False})

    def on_report(self, pod: WorkerPod, raw: bytes, updated: float) -> None:
        self.reports.append((pod.job_uid, raw))


@pytest.fixture
def world() -> World:
    return World()


async def _post(world: World, token: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
    receiver = ProgressReceiver(world.cache, world.review, world.on_report)
    async with TestClient(TestServer(receiver.app())) as client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = await client.post(PATH, data=body, headers=headers)
        text = await resp.text()
        return resp.status, (json.loads(text) if text else {})


def post(world: World, token: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
    return asyncio.run(_post(world, token, body))


def test_a_report_of_the_pods_own_job_is_accepted(world: World) -> None:
    status, _ = post(world, "tok-a", doc("job-a", 3))
    assert status == 204
    assert [(uid, orjson.loads(raw)["iteration"]) for uid, raw in world.reports] == [("job-a", 3)]


@pytest.mark.parametrize(
    ("token", "body", "code", "reason"),
    [
        (None, doc("job-a"), 401, "no_token"),
        ("tok-forged", doc("job-a"), 401, "bad_token"),
        ("tok-wrong-aud", doc("job-a"), 401, "bad_token"),
        ("tok-stranger", doc("job-a"), 403, "not_a_worker"),
        ("tok-forged-pod", doc("job-a"), 403, "not_a_worker"),  # labels from elsewhere
        ("tok-b", doc("job-a"), 403, "other_run"),  # b's pod reporting for a
        ("tok-a", b"{not json", 400, "malformed"),
        ("tok-a", b"[1, 2]", 400, "malformed"),
        ("tok-a", orjson.dumps({"run_id": "job-a", "iteration": "many"}), 400, "malformed"),
        ("tok-a", orjson.dumps({"run_id": "job-a", "latest_checkpoint": "x"}), 400, "malformed"),
        ("tok-a", orjson.dumps({"run_id": "job-a", "iteration": 1}), 400, "malformed"),
        ("tok-a", b"x" * (MAX_BODY + 1), 413, "too_large"),
    ],
    # Named, not derived from the bodies: a body carries the time it was made,
    # and each xdist worker must collect the same test IDs.
    ids=[
        "no-token", "forged-token", "wrong-audience", "not-a-worker", "forged-pod",
        "other-run", "not-json", "not-an-object", "bad-iteration", "bad-checkpoint",
        "incomplete", "too-large",
    ],
)  # fmt: skip
def test_bad_reports_are_refused_and_never_reach_status(
    world: World, token: str | None, body: bytes, code: int, reason: str
) -> None:
    status, answer = post(world, token, body)
    assert (status, answer.get("reason")) == (code, reason)
    assert world.reports == []


async def _flood(world: World) -> tuple[list[int], int]:
    receiver = ProgressReceiver(world.cache, world.review, world.on_report)
    async with TestClient(TestServer(receiver.app())) as client:
        codes = []
        for i in range(60):
            resp = await client.post(
                PATH, data=doc("job-a", i), headers={"Authorization": "Bearer tok-a"}
            )
            codes.append(resp.status)
        other = await client.post(
            PATH, data=doc("job-b"), headers={"Authorization": "Bearer tok-b"}
        )
        return codes, other.status


def test_a_flood_from_one_pod_is_limited_without_starving_others(world: World) -> None:
    codes, other = asyncio.run(_flood(world))
    assert codes.count(204) >= 20 and codes.count(429) >= 30
    assert other == 204
    assert world.reviews.count("tok-a") == 1  # reviewed once, then cached


def test_review_parsing() -> None:
    assert pod_uid_from_review(review_for("p1"), AUD) == "p1"
    assert pod_uid_from_review({"authenticated": False}, AUD) is None
    human = review_for("p1")
    human["user"]["username"] = "alice"
    assert pod_uid_from_review(human, AUD) is None
    unbound = review_for("p1")
    unbound["user"]["extra"] = {}
    assert pod_uid_from_review(unbound, AUD) is None


def test_token_cache_keeps_a_review_until_the_token_expires() -> None:
    now = [1000.0]
    exp = 1100
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).decode().rstrip("=")
    token = f"h.{payload}.s"
    assert token_expiry(token) == exp
    calls: list[str] = []

    async def review(t: str) -> dict[str, Any]:
        calls.append(t)
        return review_for("p1")

    cache = TokenCache(review, clock=lambda: now[0])

    async def twice() -> None:
        assert await cache.pod_uid(token) == "p1"
        assert await cache.pod_uid(token) == "p1"
        now[0] = exp + 1
        assert await cache.pod_uid(token) == "p1"

    asyncio.run(twice())
    assert len(calls) == 2  # reviewed again once expired


def test_rate_limiter_refills() -> None:
    now = [0.0]
    rl = RateLimiter(rate=2, burst=2, clock=lambda: now[0])
    assert [rl.allow("p") for _ in range(3)] == [True, True, False]
    now[0] += 0.5
    assert rl.allow("p") and not rl.allow("p")


async def _cut_off(world: World) -> None:
    receiver = ProgressReceiver(world.cache, world.review, world.on_report)
    # As the operator serves it (handlers.py): a lost client does not cancel the
    # handler, which then meets the cut in request.read().
    runner = web.AppRunner(receiver.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: op\r\nAuthorization: Bearer tok-a\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        writer.write(head.encode() + b'{"run_id": "job-a", ')
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()  # the worker's pod is killed mid-report
        await asyncio.sleep(0.3)
    finally:
        await runner.cleanup()


def test_a_report_cut_off_mid_body_is_refused_quietly(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        asyncio.run(_cut_off(world))
    assert world.reports == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "the report was cut off" in caplog.text
