"""Container logs of the node agent: a process's stdout and stderr go into a
file in the CRI log format (one timestamped record a line), and an HTTPS
server on the node's kubelet port serves them at /containerLogs/..., which is
where the apiserver sends `kubectl logs`."""

from __future__ import annotations

import datetime
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("nodeagent.logs")
MAX_LINE = 16 * 1024


def _stamp() -> bytes:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%f000Z").encode()


class LogSink:
    """One container run's log file; `done` is set once both streams ended."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "ab")  # noqa: SIM115 (closed when both pumps end)
        self._lock = threading.Lock()
        self._open = 0
        self.done = threading.Event()

    def pump(self, stream: str, pipe: IO[bytes]) -> threading.Thread:
        with self._lock:
            self._open += 1
        thread = threading.Thread(target=self._pump, args=(stream, pipe), daemon=True)
        thread.start()
        return thread

    def _pump(self, stream: str, pipe: IO[bytes]) -> None:
        tag = stream.encode()
        try:
            while chunk := pipe.readline(MAX_LINE):
                full = chunk.endswith(b"\n")
                record = b"%s %s %s %s" % (_stamp(), tag, b"F" if full else b"P", chunk)
                with self._lock:
                    self._file.write(record if full else record + b"\n")
                    self._file.flush()
        finally:
            pipe.close()
            with self._lock:
                self._open -= 1
                if self._open == 0:
                    self._file.close()
                    self.done.set()


@dataclass(frozen=True)
class Record:
    stamp: str
    content: bytes  # with its newline when the line was complete


def parse_records(data: bytes) -> list[Record]:
    records = []
    for line in data.split(b"\n"):
        parts = line.split(b" ", 3)
        if len(parts) < 4:
            continue
        stamp, _stream, tag, content = parts
        records.append(Record(stamp.decode(), content + (b"\n" if tag == b"F" else b"")))
    return records


def select_records(records: list[Record], tail: int | None, since: str | None) -> list[Record]:
    """tailLines counts whole lines; sinceTime keeps records stamped at or after it."""
    if since:
        records = [r for r in records if r.stamp >= since]
    if tail is not None:
        ends = [i for i, r in enumerate(records) if r.content.endswith(b"\n")]
        if tail == 0:
            return []
        if len(ends) > tail:
            records = records[ends[-tail - 1] + 1 :]
    return records


def render(record: Record, timestamps: bool) -> bytes:
    return (record.stamp.encode() + b" " if timestamps else b"") + record.content


# resolve(namespace, pod, container, previous) -> (file, still being written?) or None
Resolver = Callable[[str, str, str, bool], "tuple[Path, threading.Event | None] | None"]


def _since(query: dict[str, list[str]]) -> str | None:
    if "sinceTime" in query:
        return query["sinceTime"][0].replace("Z", "")
    if "sinceSeconds" in query:
        then = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
            seconds=int(query["sinceSeconds"][0])
        )
        return then.strftime("%Y-%m-%dT%H:%M:%S.%f000")
    return None


def stream_log(
    path: Path, done: threading.Event | None, query: dict[str, list[str]]
) -> Iterator[bytes]:
    timestamps = query.get("timestamps", ["false"])[0] == "true"
    follow = query.get("follow", ["false"])[0] == "true"
    tail = int(query["tailLines"][0]) if "tailLines" in query else None
    with open(path, "rb") as fh:
        data = fh.read()
        cut = data.rfind(b"\n") + 1  # a record still being written waits for the next read
        for rec in select_records(parse_records(data[:cut]), tail, _since(query)):
            yield render(rec, timestamps)
        pending = data[cut:]
        while follow:
            finished = done is None or done.is_set()
            chunk = fh.read()
            if chunk:
                data = pending + chunk
                cut = data.rfind(b"\n") + 1
                for rec in parse_records(data[:cut]):
                    yield render(rec, timestamps)
                pending = data[cut:]
            elif finished:
                return
            else:
                time.sleep(0.2)


class _Handler(BaseHTTPRequestHandler):
    server: LogServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts == ["healthz"]:
            self._reply(200, b"ok")
            return
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._unsupported()
            return
        query = parse_qs(url.query)
        previous = query.get("previous", ["false"])[0] == "true"
        found = self.server.resolve(parts[1], parts[2], parts[3], previous)
        if found is None:
            what = "previous terminated container" if previous else "container"
            self._reply(404, f"{what} {parts[3]!r} of pod {parts[2]!r} not found\n".encode())
            return
        limit = int(query["limitBytes"][0]) if "limitBytes" in query else None
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        try:
            for chunk in stream_log(found[0], found[1], query):
                if limit is not None:
                    chunk = chunk[: max(0, limit - sent)]
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    sent += len(chunk)
                if limit is not None and sent >= limit:
                    break
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    def do_POST(self) -> None:
        self._unsupported()

    def _unsupported(self) -> None:
        message = (
            "the local node agent runs pods as plain processes: it serves container logs, "
            "but not exec, attach or port-forward"
        )
        # A Status object: kubectl shows its message when an upgrade is refused.
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": "BadRequest",
            "code": 400,
        }
        self._reply(400, json.dumps(status).encode(), "application/json")

    def _reply(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LogServer(ThreadingHTTPServer):
    """The kubelet's log endpoint for one node; it accepts only clients whose
    certificate our CA signed (the apiserver's kubelet-client certificate)."""

    daemon_threads = True

    def __init__(self, port: int, cert: Path, key: Path, ca: Path, resolve: Resolver) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.resolve = resolve
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        # The handshake runs in the request's thread, so a slow client blocks no one.
        self.socket = ctx.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def handle_error(self, request: object, client_address: object) -> None:
        log.debug("log request from %s failed", client_address, exc_info=True)

    def serve_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, daemon=True, name="logs")
        thread.start()
        return thread
