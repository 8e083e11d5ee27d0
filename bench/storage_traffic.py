"""How many bytes and requests the worker sends to S3 to keep one run's results.

Runs `kubetune.run` of a trivial trainable (each step sleeps `--step-ms`, then
returns a few metrics) for `--seconds` against an S3 endpoint and counts, with
botocore event hooks on every S3 client the run creates, the bytes sent
(request bodies), the bytes received (response bodies) and the requests by
operation. Then it prints the size of the run's results and the ratios.

The endpoint is the environment's (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`: `. .cluster/env` after
`make cluster-up`); without one, a moto server is started in a child process.

    .venv/bin/python bench/storage_traffic.py --seconds 60
    . .cluster/env && .venv/bin/python bench/storage_traffic.py --seconds 600
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from typing import Any

import boto3
import boto3.session

MiB = 1024 * 1024


class Traffic:
    """Counts what every S3 client created after install() sends and receives."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.received = 0
        self.ops: collections.Counter[str] = collections.Counter()
        self.op_received: collections.Counter[str] = collections.Counter()
        self.enabled = True

    def install(self) -> None:
        real = boto3.session.Session.client
        traffic = self

        def client(self: Any, *args: Any, **kwargs: Any) -> Any:
            c = real(self, *args, **kwargs)
            c.meta.events.register("before-send.s3", traffic._before_send)
            c.meta.events.register("after-call.s3", traffic._after_call)
            return c

        boto3.session.Session.client = client  # type: ignore[method-assign]

    def _before_send(self, request: Any, **_: Any) -> None:
        if not self.enabled:
            return
        n = _body_size(request.body)  # every attempt, retries included
        with self.lock:
            self.sent += n

    def _after_call(self, http_response: Any, model: Any, **_: Any) -> None:
        if not self.enabled:
            return
        n = int(http_response.headers.get("content-length") or 0)
        with self.lock:
            self.ops[model.name] += 1
            self.received += n
            self.op_received[model.name] += n


def _body_size(body: Any) -> int:
    if body is None:
        return 0
    if isinstance(body, bytes | bytearray | memoryview):
        return len(body)
    if isinstance(body, str):
        return len(body.encode())
    try:  # a file or s3transfer's ReadFileChunk (its seek returns None)
        pos = body.tell()
        body.seek(0, os.SEEK_END)
        end = body.tell()
        body.seek(pos)
        return int(end - pos)
    except (AttributeError, OSError, ValueError, TypeError):
        return 0


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("the moto server did not start") from None
            time.sleep(0.2)
    return proc, url


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="how long the run trains")
    ap.add_argument("--step-ms", type=float, default=2.0, help="time each step sleeps")
    ap.add_argument("--checkpoint-frequency", type=int, default=0, help="0: no checkpoints")
    ap.add_argument("--bucket", default="kubetune-bench")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    moto = None
    if not os.environ.get("AWS_ENDPOINT_URL"):
        moto, url = start_moto()
        os.environ.update(
            AWS_ENDPOINT_URL=url,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
        )
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    try:
        return _bench(args, endpoint, "moto (child process)" if moto else endpoint)
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=10)


def _bench(args: argparse.Namespace, endpoint: str, server: str) -> int:
    admin = boto3.client("s3", endpoint_url=endpoint)
    try:
        admin.head_bucket(Bucket=args.bucket)
    except Exception:
        admin.create_bucket(Bucket=args.bucket)

    traffic = Traffic()
    traffic.install()  # after the admin client: only the run's clients are counted

    import kubetune

    seconds, sleep = args.seconds, args.step_ms / 1000.0
    stop_at = time.monotonic() + seconds

    class Bench(kubetune.Trainable):
        def setup(self, config: dict[str, Any]) -> None:
            self.x = 0.0

        def step(self) -> dict[str, Any]:
            if sleep:
                time.sleep(sleep)
            self.x += 1.0
            return {"loss": 1.0 / self.x, "accuracy": 1.0 - 1.0 / self.x, "done": False}

        def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
            return {"x": self.x}

        def load_checkpoint(self, checkpoint: Any) -> None:
            self.x = checkpoint["x"]

    class Clock(kubetune.Stopper):
        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            return False

        def stop_all(self) -> bool:
            return time.monotonic() >= stop_at

    run_uri = f"s3://{args.bucket}/traffic/{uuid.uuid4().hex[:10]}"
    checkpoint = {"frequency": args.checkpoint_frequency} if args.checkpoint_frequency else None
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        tempfile.tempdir = tmp
        out = kubetune.run(
            Bench,
            storage=run_uri,
            stop=Clock(),
            checkpoint=checkpoint,
            verbose=0,
            raise_on_failure=False,
        )
    wall = time.monotonic() - started
    traffic.enabled = False

    prefix = run_uri[len(f"s3://{args.bucket}/") :] + "/"
    body = admin.get_object(Bucket=args.bucket, Key=prefix + "result.json")["Body"].read()
    results = len(body)
    lines = body.count(b"\n")
    objects = sum(
        page.get("KeyCount", 0)
        for page in admin.get_paginator("list_objects_v2").paginate(
            Bucket=args.bucket, Prefix=prefix
        )
    )
    puts = traffic.ops["PutObject"] + traffic.ops["UploadPart"] + traffic.ops["UploadPartCopy"]
    gets = traffic.ops["GetObject"]
    other = sum(traffic.ops.values()) - puts - gets
    kt = os.path.dirname(os.path.dirname(kubetune.__file__))
    print(f"kubetune from {kt}; S3: {server}; run {out.reason} at iteration {out.iteration}")
    print(
        f"{wall:.0f} s, {lines} results, results bytes {results} ({results / MiB:.1f} MiB), "
        f"{objects} objects left in the run folder"
    )
    print(
        f"written {traffic.sent / MiB:.1f} MiB, read {traffic.received / MiB:.1f} MiB; "
        f"PUT {puts}, GET {gets}, other requests {other} ({dict(sorted(traffic.ops.items()))})"
    )
    ratio_w = traffic.sent / results if results else float("nan")
    ratio_r = traffic.received / results if results else float("nan")
    print(f"written/result {ratio_w:.2f}, read/result {ratio_r:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "seconds": wall,
                    "results": lines,
                    "result_bytes": results,
                    "sent": traffic.sent,
                    "received": traffic.received,
                    "ops": dict(traffic.ops),
                    "op_received": dict(traffic.op_received),
                    "objects": objects,
                    "server": server,
                },
                f,
                indent=1,
            )
    return 0 if out.ok else 1


if __name__ == "__main__":
    sys.exit(main())
