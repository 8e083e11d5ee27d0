"""The endpoint workers push their progress to (POST /v1alpha1/progress).

A worker proves who it is with its projected service-account token (audience
`kubetune.io/progress`, bound to its pod). The operator checks the token with
a TokenReview (cached until the token expires, at most 10 minutes), finds the
pod it is bound to among the worker pods it watches, and takes the job from
that pod, never from the body: a report names its run (`run_id`), which must
be that job's uid. So no pod can report for another job, and a token of a
deleted pod stops working. Bad reports are refused with one log line per pod
and reason; a flood from one pod is rate-limited without slowing the others.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from kubetune_contract import PROGRESS_AUDIENCE as AUDIENCE
from kubetune_contract import PROGRESS_MAX_BODY, Progress
from kubetune_operator.cache import ClusterCache, WorkerPod
from kubetune_operator.metrics import PROGRESS_REPORTS, TOKEN_REVIEWS

log = logging.getLogger("kubetune_operator.progress")

PATH = "/v1alpha1/progress"
MAX_BODY = PROGRESS_MAX_BODY
TOKEN_CACHE_MAX_S = 600.0
BAD_TOKEN_CACHE_S = 30.0
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"

Review = Callable[[str], Awaitable[dict[str, Any]]]


def pod_uid_from_review(status: dict[str, Any], audience: str = AUDIENCE) -> str | None:
    """The uid of the pod a reviewed token is bound to, if it is a valid
    service-account token for our audience; else None."""
    if not status.get("authenticated"):
        return None
    if audience not in (status.get("audiences") or []):
        return None
    user = status.get("user") or {}
    if not str(user.get("username") or "").startswith("system:serviceaccount:"):
        return None
    uids = (user.get("extra") or {}).get(POD_UID_KEY) or []
    return str(uids[0]) if uids else None


def token_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (already verified by the TokenReview), or None."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, KeyError, ValueError, TypeError):
        return None


class TokenCache:
    """Token digest -> pod uid (or None for a refused token), until it expires."""

    def __init__(self, review: Review, *, clock: Callable[[], float] = time.time) -> None:
        self._review = review
        self._clock = clock
        self._known: dict[str, tuple[str | None, float]] = {}
        self._pending: dict[str, asyncio.Future[str | None]] = {}

    async def pod_uid(self, token: str) -> str | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock()
        known = self._known.get(digest)
        if known is not None and known[1] > now:
            return known[0]
        if digest in self._pending:  # one review per token, however many reports wait
            return await asyncio.shield(self._pending[digest])
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._pending[digest] = future
        try:
            TOKEN_REVIEWS.inc()
            uid = pod_uid_from_review(await self._review(token))
            expires = token_expiry(token) if uid else None
            until = now + (BAD_TOKEN_CACHE_S if uid is None else TOKEN_CACHE_MAX_S)
            if expires is not None:
                until = min(until, expires)
            if len(self._known) > 100_000:
                self._known = {k: v for k, v in self._known.items() if v[1] > now}
            self._known[digest] = (uid, until)
            future.set_result(uid)
            return uid
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it through shield
            raise
        finally:
            del self._pending[digest]


class RateLimiter:
    """A token bucket per pod: a pod may report `rate`/s with bursts of `burst`."""

    def __init__(
        self, rate: float = 5.0, burst: float = 20.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        now = self._clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if len(self._buckets) > 100_000:
            self._buckets.clear()
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        return True


@dataclass
class Verdict:
    status: int
    reason: str  # a word for metrics and logs
    message: str = ""


def check_report(pod: WorkerPod, raw: bytes) -> tuple[Verdict, dict[str, Any] | None]:
    """Is this body a progress report of the pod's own job? (pure)"""
    if len(raw) > MAX_BODY:
        return Verdict(413, "too_large", f"a report is at most {MAX_BODY} bytes"), None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Verdict(400, "malformed", "the body is not JSON"), None
    if not isinstance(doc, dict):
        return Verdict(400, "malformed", "the body is not a JSON object"), None
    try:
        progress = Progress.from_dict(doc)
    except (ValueError, TypeError, AttributeError) as exc:
        return Verdict(400, "malformed", f"not a progress document: {exc}"), None
    if progress.run_id != pod.job_uid:
        return Verdict(403, "other_run", "the report is not for this pod's job"), None
    if progress.updated is None:
        return Verdict(400, "malformed", "the report has no `updated` time"), None
    return Verdict(204, "accepted"), doc


class ProgressReceiver:
    def __init__(
        self,
        cache: ClusterCache,
        review: Review,
        on_report: Callable[[WorkerPod, bytes, float], None],
    ) -> None:
        self.cache = cache
        self.tokens = TokenCache(review)
        self.limiter = RateLimiter()
        self.on_report = on_report
        self._logged: set[tuple[str, str]] = set()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(PATH, self.handle)
        return app

    def _refuse(self, who: str, verdict: Verdict) -> web.Response:
        PROGRESS_REPORTS.labels(verdict.reason).inc()
        if (who, verdict.reason) not in self._logged:
            if len(self._logged) > 10_000:
                self._logged.clear()
            self._logged.add((who, verdict.reason))
            log.warning("progress report from %s refused: %s", who, verdict.message)
        headers = {"Retry-After": "1"} if verdict.status == 429 else None
        return web.json_response(
            {"reason": verdict.reason, "message": verdict.message},
            status=verdict.status,
            headers=headers,
        )

    async def handle(self, request: web.Request) -> web.Response:
        who = request.remote or "?"
        if (request.content_length or 0) > MAX_BODY:
            return self._refuse(who, Verdict(413, "too_large", f"at most {MAX_BODY} bytes"))
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return self._refuse(who, Verdict(401, "no_token", "no bearer token"))
        try:
            pod_uid = await self.tokens.pod_uid(auth[7:].strip())
        except Exception as exc:
            log.warning("TokenReview failed: %s", exc)
            return self._refuse(who, Verdict(503, "review_failed", "cannot check the token now"))
        if pod_uid is None:
            return self._refuse(who, Verdict(401, "bad_token", "the token was refused"))
        pod = self.cache.pod(pod_uid)
        # The pod's labels name its job; the job must be there, in the pod's
        # own namespace, with that uid (labels alone can be written by anyone
        # who can create a pod).
        if pod is None or self.cache.job_uid(pod.job_key) != pod.job_uid:
            return self._refuse(
                f"pod {pod_uid}",
                Verdict(403, "not_a_worker", "the token's pod is not a worker pod of a job"),
            )
        who = f"{pod.namespace}/{pod.view.name}"
        if not self.limiter.allow(pod_uid):
            return self._refuse(who, Verdict(429, "rate_limited", "too many reports"))
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(who, Verdict(413, "too_large", f"at most {MAX_BODY} bytes"))
        except ConnectionError:
            # The worker went away mid-report (its pod deleted or killed): its
            # progress file in S3 still holds what it had; nobody waits for an answer.
            return self._refuse(who, Verdict(400, "cut_off", "the report was cut off"))
        verdict, doc = check_report(pod, raw)
        if doc is None:
            return self._refuse(who, verdict)
        PROGRESS_REPORTS.labels("accepted").inc()
        self.on_report(pod, orjson.dumps(doc), float(doc["updated"]))
        return web.Response(status=204)
