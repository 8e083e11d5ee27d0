"""The worker pushes its progress document to the operator (kubetune.runtime.push): the
bearer token re-read on each push, the body as written to the progress file,
Retry-After and backoff honoured, refusals logged once, the final document
pushed before exit, and a dead or silent endpoint never slowing the run."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import kubetune
import kubetune_contract as contract
from kubetune.runtime.push import (
    CA_FILE_ENV,
    MAX_BODY,
    TOKEN_FILE_ENV,
    URL_ENV,
    ProgressPusher,
)

Reply = tuple[int, dict[str, str]]


class Operator:
    """A progress endpoint: records each request, answers with `reply`."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.reply: Callable[[int], Reply] = lambda n: (200, {})
        self.delay = 0.0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    n = len(outer.received)
                    outer.received.append(
                        {
                            "at": time.monotonic(),
                            "path": self.path,
                            "auth": self.headers.get("Authorization"),
                            "type": self.headers.get("Content-Type"),
                            "body": body,
                        }
                    )
                if outer.delay:
                    time.sleep(outer.delay)
                status, headers = outer.reply(n)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1alpha1/progress"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def docs(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.received]

    def wait_for(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < n:
            assert time.monotonic() < deadline, f"{len(self.received)} pushes, wanted {n}"
            time.sleep(0.01)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def operator() -> Iterator[Operator]:
    op = Operator()
    yield op
    op.close()


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("token-1\n")
    return path


@pytest.fixture
def kt_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    logger = logging.getLogger("kubetune")
    added = not logger.propagate  # setup_logging() (the CLI's) stops propagation
    if added:
        logger.addHandler(caplog.handler)
    caplog.set_level(logging.WARNING, logger="kubetune")
    yield caplog
    if added:
        logger.removeHandler(caplog.handler)


def doc(i: int, state: str = "running") -> bytes:
    return json.dumps({"state": state, "iteration": i}).encode()


def test_no_url_means_no_pusher(token):
    assert ProgressPusher.from_env({}) is None
    assert ProgressPusher.from_env({URL_ENV: ""}) is None
    assert ProgressPusher.from_env({URL_ENV: "ftp://x/"}) is None  # logged, never fatal
    pusher = ProgressPusher.from_env(
        {URL_ENV: "https://10.0.0.5:8470/v1alpha1/progress", TOKEN_FILE_ENV: str(token)}
    )
    assert pusher is not None and pusher._context is not None


def test_a_push_carries_the_token_read_each_time(operator, token):
    pusher = ProgressPusher(operator.url, str(token))
    pusher.start()
    pusher.offer(doc(1))
    operator.wait_for(1)
    token.write_text("token-2")  # the kubelet rotated it
    pusher.offer(doc(2))
    operator.wait_for(2)
    pusher.close(doc(3, "completed"))
    first, second, final = operator.received
    assert (first["auth"], second["auth"], final["auth"]) == (
        "Bearer token-1",
        "Bearer token-2",
        "Bearer token-2",
    )
    assert first["type"] == "application/json" and first["path"] == "/v1alpha1/progress"
    assert [d["iteration"] for d in operator.docs()] == [1, 2, 3]


def test_only_the_newest_document_is_sent(operator, token):
    operator.delay = 0.3
    pusher = ProgressPusher(operator.url, str(token))
    pusher.start()
    pusher.offer(doc(1))
    operator.wait_for(1)
    for i in range(2, 10):  # while the first push is in flight
        pusher.offer(doc(i))
    operator.wait_for(2)
    assert pusher.idle()
    assert [d["iteration"] for d in operator.docs()] == [1, 9]
    pusher.close()


def test_retry_after_is_honoured_and_the_final_push_retried_once(operator, token, kt_log):
    operator.reply = lambda n: (429, {"Retry-After": "1"}) if n in (0, 2) else (200, {})
    pusher = ProgressPusher(operator.url, str(token))
    pusher.start()
    pusher.offer(doc(1))
    operator.wait_for(1)
    t0 = operator.received[0]["at"]
    for i in range(2, 6):
        pusher.offer(doc(i))
        time.sleep(0.1)
    operator.wait_for(2)
    assert operator.received[1]["at"] - t0 >= 0.95  # nothing before Retry-After
    assert operator.docs()[1]["iteration"] == 5
    # The final push goes at once; answered 429, it is retried once after Retry-After.
    started = time.monotonic()
    pusher.close(doc(6, "stopped"))
    assert 0.95 <= time.monotonic() - started < 3
    assert [d["iteration"] for d in operator.docs()[2:]] == [6, 6]
    assert sum("429" in r.getMessage() for r in kt_log.records) == 1


def test_server_errors_back_off(operator, token, kt_log):
    operator.reply = lambda n: (503, {})
    pusher = ProgressPusher(operator.url, str(token))
    pusher.start()
    until = time.monotonic() + 2.6
    i = 0
    while time.monotonic() < until:
        i += 1
        pusher.offer(doc(i))
        time.sleep(0.05)
    times = [r["at"] - operator.received[0]["at"] for r in operator.received]
    # Tries at 0 s, after 1 s, after 2 s more: 26 offers, 2 or 3 tries.
    assert len(times) in (2, 3) and times[1] >= 0.95
    assert sum("503" in r.getMessage() for r in kt_log.records) == 1
    operator.reply = lambda n: (200, {})
    pusher.close(doc(99, "completed"))  # a server that answered gets the final push
    assert operator.docs()[-1]["iteration"] == 99


def test_refusals_are_logged_once_per_status_and_pushing_goes_on(operator, token, kt_log):
    codes = [401, 401, 403, 401, 200]
    operator.reply = lambda n: (codes[min(n, len(codes) - 1)], {})
    pusher = ProgressPusher(operator.url, str(token))
    pusher.start()
    for i in range(5):
        pusher.offer(doc(i))
        operator.wait_for(i + 1)
    pusher.close()
    refused = [r.getMessage() for r in kt_log.records if "refused" in r.getMessage()]
    assert len(refused) == 2 and "(401)" in refused[0] and "(403)" in refused[1]
    assert pusher.pushed == 1


def test_a_body_over_64_kib_is_never_sent(operator, token, kt_log):
    pusher = ProgressPusher(operator.url, str(token))
    pusher.start()
    pusher.offer(b"{" + b" " * MAX_BODY + b"}")
    pusher.offer(doc(1))
    operator.wait_for(1)
    pusher.close()
    assert [d["iteration"] for d in operator.docs()] == [1]
    assert all(len(r["body"]) <= MAX_BODY for r in operator.received)


# --- through the loop ---------------------------------------------------------------


class Steps(kubetune.Trainable):
    def step(self) -> dict[str, Any]:
        time.sleep(0.002)
        return {"loss": 1.0 / (self.iteration + 1)}

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
        return {"i": self.iteration}

    def load_checkpoint(self, checkpoint: Any) -> None:
        pass


def run_steps(tmp_path: Path, iterations: int = 400) -> kubetune.RunResult:
    return kubetune.run(
        Steps,
        storage=str(tmp_path / "run"),
        stop={"training_iteration": iterations},
        checkpoint={"frequency": 150},
        verbose=0,
    )


def test_the_loop_pushes_what_it_writes_and_the_final_document(
    operator, token, tmp_path, monkeypatch
):
    monkeypatch.setenv(URL_ENV, operator.url)
    monkeypatch.setenv(TOKEN_FILE_ENV, str(token))
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
    out = run_steps(tmp_path)
    assert out.ok
    docs = operator.docs()
    assert len(docs) >= 3 and docs[0]["state"] == "running"
    assert all(r["auth"] == "Bearer token-1" for r in operator.received)
    # The last push is the final document, byte for byte the progress file.
    final = (tmp_path / "run" / contract.PROGRESS_FILE).read_bytes()
    assert operator.received[-1]["body"] == final
    assert docs[-1]["state"] == "completed" and docs[-1]["iteration"] == 400
    assert docs[-1]["latest_checkpoint"]["iteration"] == 400
    # Pushed after each committed checkpoint, too.
    assert {150, 300} <= {
        d["latest_checkpoint"]["iteration"] for d in docs if d["latest_checkpoint"]
    }


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1alpha1/progress"


def test_a_dead_endpoint_never_slows_or_fails_the_run(token, tmp_path, monkeypatch, kt_log):
    started = time.monotonic()
    baseline = run_steps(tmp_path / "a")
    base_s = time.monotonic() - started
    monkeypatch.setenv(URL_ENV, _closed_port())
    monkeypatch.setenv(TOKEN_FILE_ENV, str(token))
    started = time.monotonic()
    out = run_steps(tmp_path / "b")
    took = time.monotonic() - started
    assert baseline.ok and out.ok and out.iteration == 400
    assert took < base_s + 1.5, (took, base_s)
    assert sum("backing off" in r.getMessage() for r in kt_log.records) == 1


def test_a_silent_endpoint_costs_at_most_the_timeout_at_exit(token, tmp_path, monkeypatch):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections, never answers
    try:
        monkeypatch.setenv(URL_ENV, f"http://127.0.0.1:{silent.getsockname()[1]}/p")
        monkeypatch.setenv(TOKEN_FILE_ENV, str(token))
        started = time.monotonic()
        out = run_steps(tmp_path, iterations=200)
        took = time.monotonic() - started
    finally:
        silent.close()
    assert out.ok and out.iteration == 200
    assert took < 1.0 + 2.5 + 1.5, took  # the run, one push in flight, slack


def test_pushes_bypass_proxies_and_redirects(operator, token, monkeypatch, kt_log):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing there
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    operator.reply = lambda n: (
        (307, {"Location": "http://example.invalid/x"}) if n == 0 else (204, {})
    )
    pusher = ProgressPusher(operator.url, str(token))
    pusher.start()
    pusher.offer(doc(1))
    operator.wait_for(1)
    assert pusher.idle()
    pusher.offer(doc(2))
    operator.wait_for(2)
    pusher.close()
    assert pusher.pushed == 1 and len(operator.received) == 2
    assert any("(307)" in r.getMessage() for r in kt_log.records)
