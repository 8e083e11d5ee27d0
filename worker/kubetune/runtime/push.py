"""The worker pushes its progress document to the operator over HTTP, so the
job's status follows within a request instead of the operator polling S3.

The operator sets, in the worker pod's environment:

* `KUBETUNE_PROGRESS_URL`: where to POST (http or https);
* `KUBETUNE_PROGRESS_TOKEN_FILE`: a projected service-account token (audience
  `kubetune.io/progress`), re-read on each push since the kubelet rotates it;
* `KUBETUNE_PROGRESS_CA_FILE` (optional): the CA bundle for an https URL.

Each push is `POST <url>` with `Authorization: Bearer <token>` and
`Content-Type: application/json`, the body being the progress document as
written to the progress file (at most 64 KiB). Pushes run in a thread of their
own with a 2 s timeout and only ever send the newest document, so a slow or
dead operator never slows the training loop nor the storage writes, and never
fails the run. Without `KUBETUNE_PROGRESS_URL` nothing is pushed.
"""

from __future__ import annotations

import email.utils
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import kubetune_contract as contract

__all__ = ["CA_FILE_ENV", "MAX_BODY", "TOKEN_FILE_ENV", "URL_ENV", "ProgressPusher"]

URL_ENV = contract.PROGRESS_URL_ENV
TOKEN_FILE_ENV = contract.PROGRESS_TOKEN_FILE_ENV
CA_FILE_ENV = contract.PROGRESS_CA_FILE_ENV
MAX_BODY = contract.PROGRESS_MAX_BODY
TIMEOUT_S = 2.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
FINAL_RETRY_WAIT_S = 2.0
REFUSED = frozenset({400, 401, 403, 413})

log = logging.getLogger("kubetune")


def _retry_after(value: str | None, now_wall: float) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); 1 s
    when it is missing or unreadable."""
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - now_wall)
        except (TypeError, ValueError, IndexError):
            pass
    return 1.0


class ProgressPusher:
    """Pushes the newest progress document from its own thread; `close(final)`
    pushes the last one synchronously (bounded by the timeout)."""

    def __init__(
        self,
        url: str,
        token_file: str | None,
        ca_file: str | None = None,
        *,
        timeout_s: float = TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{URL_ENV}={url!r} is not an http:// or https:// URL")
        self.url = url
        self.token_file = token_file
        self.timeout_s = timeout_s
        self._clock = clock
        self._context: ssl.SSLContext | None = None
        handlers: list[urllib.request.BaseHandler] = [
            # Straight to the operator: never through an HTTP(S)_PROXY of the
            # pod's environment, and never following a redirect elsewhere with
            # the token.
            urllib.request.ProxyHandler({}),
            _NoRedirect(),
        ]
        if url.startswith("https://"):
            self._context = ssl.create_default_context(cafile=ca_file or None)
            handlers.append(urllib.request.HTTPSHandler(context=self._context))
        self._opener = urllib.request.build_opener(*handlers)
        self._cond = threading.Condition()
        self._pending: bytes | None = None
        self._closing = False
        self._not_before = 0.0  # no push before this (Retry-After, or backoff)
        self._backoff = 0.0
        self._unreachable = False  # the last try timed out or could not connect
        self._logged: set[str] = set()
        self._busy = False
        self.pushed = 0  # accepted pushes
        self.attempts = 0
        self._thread = threading.Thread(target=self._run, name="kubetune-push", daemon=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProgressPusher | None:
        env = os.environ if environ is None else environ
        url = env.get(URL_ENV, "").strip()
        if not url:
            return None
        try:
            return cls(url, env.get(TOKEN_FILE_ENV) or None, env.get(CA_FILE_ENV) or None)
        except (ValueError, OSError, ssl.SSLError) as exc:
            log.warning("progress is not pushed: %s", exc)
            return None

    # --- the writer's side

    def start(self) -> None:
        self._thread.start()

    def offer(self, body: bytes) -> None:
        """The newest document; replaces one not sent yet. Never blocks."""
        if len(body) > MAX_BODY:
            self._log_once(
                "size", f"progress document of {len(body)} bytes not pushed (max 64 KiB)"
            )
            return
        with self._cond:
            self._pending = body
            self._cond.notify()

    def close(self, final: bytes | None = None) -> None:
        """Stop the thread (waiting for a push in flight, at most the timeout),
        then push `final` at once: even inside a Retry-After window, and once
        more after up to 2 s if the operator answers 429. Skipped while the
        endpoint is unreachable (a timeout or a refused connection last time)."""
        with self._cond:
            self._closing = True
            self._pending = None
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout_s + 0.5)
        if final is None or len(final) > MAX_BODY or self._unreachable:
            return
        status, retry_after = self._send(final)
        if status == 429:
            time.sleep(min(retry_after, FINAL_RETRY_WAIT_S))
            self._send(final)

    # --- the thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and (
                    self._pending is None or self._clock() < self._not_before
                ):
                    wait = None
                    if self._pending is not None:
                        wait = max(0.0, self._not_before - self._clock())
                    self._cond.wait(wait)
                if self._closing:
                    return
                body, self._pending = self._pending, None
                self._busy = True
            assert body is not None
            try:
                self._send(body)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until nothing is pending or in flight (for tests)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._busy or (self._pending is not None and self._clock() >= self._not_before):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _token(self) -> str | None:
        if not self.token_file:
            self._log_once("token", f"{TOKEN_FILE_ENV} is not set: pushing without a token")
            return None
        try:
            with open(self.token_file, encoding="utf-8") as f:
                return f.read().strip()
        except OSError as exc:
            self._log_once(
                "token-file", f"cannot read the progress token {self.token_file}: {exc.strerror}"
            )
            return None

    def _send(self, body: bytes) -> tuple[int | None, float]:
        """One POST; returns (status or None, Retry-After seconds). Never raises."""
        headers = {"Content-Type": "application/json"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self.attempts += 1
        status: int | None = None
        retry_after = 0.0
        try:
            with self._opener.open(request, timeout=self.timeout_s) as resp:
                resp.read(4096)
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            retry_after = _retry_after(exc.headers.get("Retry-After"), time.time())
            exc.close()
        except (OSError, ValueError, ssl.SSLError) as exc:  # refused, timed out, TLS, DNS
            self._unreachable = True
            self._back_off(f"unreachable ({_why(exc)})")
            return None, 0.0
        except Exception as exc:  # http.client oddities: never fail the run
            self._unreachable = True
            self._back_off(f"failed ({type(exc).__name__})")
            return None, 0.0
        self._unreachable = False
        if 200 <= status < 300:
            self._backoff = 0.0
            self.pushed += 1
        elif status == 429:
            self._not_before = self._clock() + retry_after
            self._log_once("429", f"progress push rate limited by {self.url} (429)")
        elif status >= 500:
            self._back_off(f"answered {status}")
        else:
            self._log_once(
                str(status),
                f"progress push refused by {self.url} ({status}); "
                + (
                    "check the worker's token and the operator's progress endpoint"
                    if status in REFUSED
                    else "continuing"
                ),
            )
        return status, retry_after

    def _back_off(self, why: str) -> None:
        self._backoff = min(BACKOFF_MAX_S, max(BACKOFF_FIRST_S, self._backoff * 2))
        self._not_before = self._clock() + self._backoff
        self._log_once(
            "backoff:" + why.split(" ")[0],
            f"progress push to {self.url} {why}: backing off (up to {BACKOFF_MAX_S:.0f} s); "
            "the progress file in storage stays current",
        )

    def _log_once(self, key: str, line: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning("%s", line)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx answer becomes an HTTPError: a refusal


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if reason is not None:
        return f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason
    return type(exc).__name__
