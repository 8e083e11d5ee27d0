"""Load generator of the operator scale benchmark: it plays the workers of
the worker pods kwok runs, so thousands of jobs report progress without
thousands of processes.

For each worker pod Running on a kwok node and annotated `kubetune.io/loadgen`
(the benchmark sets it through the job's template; a pod without it is left
alone), it:

1. reads the job from the pod as a real worker does: the worker spec in the
   container's environment (run id = the job's uid, run folder, stop criteria),
   else the pod's labels and the annotation (how many iterations to play);
2. `push` transport: gets a token the way a projected ServiceAccount token is
   made, the TokenRequest API, bound to the pod (audience
   `kubetune.io/progress`, one hour), then POSTs progress documents to the
   operator's endpoint with `Authorization: Bearer <token>`;
   `s3` transport (the operator before the push endpoint): overwrites the run
   folder's `.kubetune/progress.json`, as the worker did then;
3. reports one iteration every `--interval` seconds (first report at a random
   point of the first interval, so pods do not report in lockstep), with
   `last_result.training_iteration` and `last_result.reported_at` (time.time()
   when sent: the watcher's result -> status lag);
4. after the stop iteration (`spec.stop.training_iteration`), sends a final
   document with state `completed` and patches the pod's annotation
   `kubetune.io/kwok-exit: "0"`: kwok's pod-complete stage (localcluster/addons/kwok_stages.py)
   then ends the pod Succeeded with the worker container's exit code 0.

Responses of the push endpoint: 2xx accepted; 429 waits Retry-After; 503
(operator starting) retries after a second; 401/403 gets a new token once;
400/413 are counted as refused. Every accepted report is logged as
`<job> <iteration> <reported_at>` (for the result -> status figure).

SIGUSR1 pauses every player (the benchmark's "nothing changes" window), SIGUSR2
resumes, SIGTERM writes the stats (`--stats`) and exits.

    python bench/loadgen.py --namespace NS --transport push \
        --url http://127.0.0.1:8470/v1alpha1/progress --interval 10 \
        --log /tmp/reports.log --stats /tmp/loadgen.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from scale_figures import PLAY_ANNOTATION  # noqa: E402
from scale_kube import Kube, KubeConfig, cluster_parser, run_until_stopped  # noqa: E402

from kubetune_contract import PROGRESS_AUDIENCE as AUDIENCE  # noqa: E402
from kubetune_contract import (  # noqa: E402
    PROGRESS_FILE,
    WORKER_SPEC_ENV,
    Progress,
)
from kubetune_contract import PROGRESS_MAX_BODY as MAX_DOC_BYTES  # noqa: E402
from localcluster.addons.kwok import NODE_PREFIX  # noqa: E402
from localcluster.addons.kwok_stages import EXIT_ANNOTATION  # noqa: E402

TOKEN_SECONDS = 3600
WORKER = "worker"


# --- pure parts ----------------------------------------------------------------
def progress_doc(
    run_id: str,
    iteration: int,
    *,
    state: str = "running",
    now: float,
    started: float,
    reason: str = "",
    message: str = "",
) -> dict[str, Any]:
    """A worker's progress document (kubetune_contract.Progress), as a dict."""
    last_result = {
        "training_iteration": iteration,
        "time_total_s": round(now - started, 3),
        "done": state == "completed",
        "loss": round(1.0 / (1 + iteration), 6),
        "reported_at": now,
    }
    return Progress(
        run_id=run_id,
        state=state,
        reason=reason,
        message=message,
        iteration=iteration,
        last_result=last_result,
        updated=now,
    ).to_dict()


def encode_doc(doc: dict[str, Any]) -> bytes:
    data = json.dumps(doc, separators=(",", ":")).encode()
    if len(data) > MAX_DOC_BYTES:
        raise ValueError(f"progress document of {len(data)} bytes is over 64 KiB")
    return data


@dataclass(frozen=True)
class Played:
    """What the load generator needs to play one worker pod."""

    namespace: str
    pod: str
    pod_uid: str
    job: str
    run_id: str
    run_uri: str | None
    iterations: int  # the stop iteration: completed after it
    service_account: str


def played_from_pod(pod: dict[str, Any]) -> Played | None:
    """The worker this pod runs, or None when the load generator should not play it
    (not annotated, not on a kwok node, not Running, being deleted)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    annotations = meta.get("annotations") or {}
    if PLAY_ANNOTATION not in annotations or meta.get("deletionTimestamp"):
        return None
    if not str(spec.get("nodeName") or "").startswith(NODE_PREFIX):
        return None
    if (pod.get("status") or {}).get("phase") != "Running" or EXIT_ANNOTATION in annotations:
        return None
    labels = meta.get("labels") or {}
    worker_spec: dict[str, Any] = {}
    for container in spec.get("containers") or []:
        if container.get("name") != WORKER:
            continue
        for env in container.get("env") or []:
            if env.get("name") == WORKER_SPEC_ENV and env.get("value"):
                with contextlib.suppress(ValueError):
                    worker_spec = json.loads(env["value"])
    stop = worker_spec.get("stop") or {}
    try:
        iterations = int(stop.get("training_iteration") or annotations[PLAY_ANNOTATION])
    except ValueError:
        return None
    return Played(
        namespace=meta.get("namespace", "default"),
        pod=meta["name"],
        pod_uid=meta.get("uid", ""),
        job=labels.get("kubetune.io/job", meta["name"]),
        run_id=worker_spec.get("run_id") or labels.get("kubetune.io/job-uid", ""),
        run_uri=worker_spec.get("run_uri"),
        iterations=iterations,
        service_account=spec.get("serviceAccountName") or "default",
    )


def retry_after(value: str | None, default: float = 1.0) -> float:
    try:
        return max(0.0, float(value)) if value else default
    except ValueError:
        return default


# --- the players ---------------------------------------------------------------------
class LoadGen:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.kube = Kube(KubeConfig.load(Path(args.kubeconfig)), limit=args.api_connections)
        self.stats: Counter[str] = Counter()
        self.running = asyncio.Event()
        self.running.set()
        self.players: dict[str, asyncio.Task[None]] = {}
        self.done: set[str] = set()  # pods whose worker has finished
        self.token_sem = asyncio.Semaphore(16)
        self.log = open(args.log, "a", buffering=1 << 16) if args.log else None  # noqa: SIM115
        self.http: Any = None
        self.s3: Any = None
        self.final_s3: Any = None  # push transport: the final document's durable copy
        self.pool = ThreadPoolExecutor(max_workers=args.s3_threads)
        self.started = time.time()

    async def run(self) -> None:
        import aiohttp

        if self.args.transport == "push":
            self.http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.args.push_connections),
                timeout=aiohttp.ClientTimeout(total=30),
            )
            if self.args.final_to_s3:
                self.final_s3 = _s3_client(self.args.s3_env)
        else:
            self.s3 = _s3_client(self.args.s3_env)
        path = f"/api/v1/namespaces/{self.args.namespace}/pods"
        async for _t, etype, pod in self.kube.watch(path):
            if etype == "RELIST":
                self.stats["watch_relists"] += 1
                continue
            name = (pod.get("metadata") or {}).get("name")
            if not name:
                continue
            if etype == "DELETED" or (pod.get("metadata") or {}).get("deletionTimestamp"):
                self._stop(name)
                continue
            if name in self.players or name in self.done:
                continue
            played = played_from_pod(pod)
            if played is not None:
                self.players[name] = asyncio.create_task(self._play(played))

    def _stop(self, pod: str) -> None:
        task = self.players.pop(pod, None)
        if task is not None:
            task.cancel()
            self.stats["players_stopped"] += 1

    async def _play(self, w: Played) -> None:
        self.stats["players"] += 1
        try:
            token = await self._token(w) if self.http is not None else ""
            started = time.time()
            # the first report somewhere in the first interval: no lockstep
            await asyncio.sleep(random.uniform(0, self.args.interval))
            iteration = 0
            while iteration < w.iterations:
                await self.running.wait()
                iteration += 1
                doc = progress_doc(w.run_id, iteration, now=time.time(), started=started)
                token = await self._send(w, doc, token)
                if iteration < w.iterations:
                    await asyncio.sleep(self.args.interval)
            await self.running.wait()
            final = progress_doc(
                w.run_id, iteration, state="completed", now=time.time(), started=started
            )
            if self.final_s3 is not None:
                # A worker writes its progress file before it pushes and exits:
                # the operator reads it if the push is lost (e.g. it restarted).
                await self._put_s3(w, encode_doc(final), self.final_s3)
            await self._send(w, final, token)
            await self.kube.patch_merge(
                f"/api/v1/namespaces/{w.namespace}/pods/{w.pod}",
                {"metadata": {"annotations": {EXIT_ANNOTATION: "0"}}},
            )
            self.stats["completed"] += 1
            self.done.add(w.pod)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one player's trouble never stops the others
            self.stats[f"player_error:{type(exc).__name__}"] += 1
            print(f"loadgen: {w.pod}: {exc}", file=sys.stderr, flush=True)
        finally:
            self.players.pop(w.pod, None)

    async def _token(self, w: Played) -> str:
        async with self.token_sem:
            t0 = time.monotonic()
            token = await self.kube.token_request(
                w.namespace, w.service_account, w.pod, w.pod_uid, AUDIENCE, TOKEN_SECONDS
            )
            self.stats["tokens"] += 1
            self.stats["token_ms_total"] += int((time.monotonic() - t0) * 1000)
            return token

    async def _send(self, w: Played, doc: dict[str, Any], token: str) -> str:
        """Sends one report until it is accepted or refused; returns the token in use."""
        body = encode_doc(doc)
        if self.s3 is not None:
            await self._put_s3(w, body)
            self._accepted(w, doc)
            return token
        fresh_token = False
        for _attempt in range(20):
            try:
                async with self.http.post(
                    self.args.url,
                    data=body,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                ) as resp:
                    await resp.read()
                    status, wait = resp.status, resp.headers.get("Retry-After")
            except Exception as exc:  # connection refused while the operator starts ...
                self.stats[f"post_error:{type(exc).__name__}"] += 1
                await asyncio.sleep(1.0)
                continue
            self.stats[f"http_{status}"] += 1
            if 200 <= status < 300:
                self._accepted(w, doc)
                return token
            if status == 429:
                await asyncio.sleep(retry_after(wait))
                # a newer report replaces this one, as a worker's next flush would
                doc = dict(doc, updated=time.time())
                body = encode_doc(doc)
                continue
            if status == 503:
                await asyncio.sleep(retry_after(wait))
                continue
            if status in (401, 403) and not fresh_token:
                token, fresh_token = await self._token(w), True
                continue
            self.stats["refused"] += 1
            return token
        self.stats["gave_up"] += 1
        return token

    async def _put_s3(self, w: Played, body: bytes, client: Any = None) -> None:
        s3 = client or self.s3
        uri = w.run_uri or ""
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        key = f"{prefix.rstrip('/')}/{PROGRESS_FILE}"
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self.pool,
                lambda: s3.put_object(
                    Bucket=bucket, Key=key, Body=body, ContentType="application/json"
                ),
            )
            self.stats["s3_puts"] += 1
        except Exception as exc:
            self.stats[f"s3_error:{type(exc).__name__}"] += 1
            raise

    def _accepted(self, w: Played, doc: dict[str, Any]) -> None:
        self.stats["accepted"] += 1
        if self.log is not None:
            reported = doc["last_result"]["reported_at"]
            self.log.write(f"{w.job} {doc['iteration']} {reported:.6f}\n")

    def pause(self) -> None:
        self.running.clear()
        self.stats["pauses"] += 1
        self.flush()

    def resume(self) -> None:
        self.running.set()

    def flush(self) -> None:
        if self.log is not None:
            self.log.flush()
        if self.args.stats:
            out = dict(
                self.stats, active_players=len(self.players), paused=not self.running.is_set()
            )
            Path(self.args.stats).write_text(json.dumps(out, indent=1, sort_keys=True))

    async def close(self) -> None:
        for task in list(self.players.values()):
            task.cancel()
        self.flush()
        if self.http is not None:
            await self.http.close()
        await self.kube.close()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _s3_client(env_file: str | None) -> Any:
    import boto3

    env = dict(os.environ)
    if env_file:
        for line in Path(env_file).read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                name, _, value = line[len("export ") :].partition("=")
                env[name] = value.strip().strip('"')
    return boto3.client(
        "s3",
        endpoint_url=env.get("AWS_ENDPOINT_URL"),
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
    )


async def amain(args: argparse.Namespace) -> int:
    gen = LoadGen(args)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, gen.pause)
    loop.add_signal_handler(signal.SIGUSR2, gen.resume)

    async def flusher() -> None:
        while True:
            await asyncio.sleep(5)
            gen.flush()

    tasks = [asyncio.create_task(gen.run()), asyncio.create_task(flusher())]
    return await run_until_stopped(tasks, gen.close, "loadgen")


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[1]
    p = cluster_parser("bench/loadgen.py", __doc__.split("\n\n")[0])
    p.add_argument("--transport", choices=["push", "s3"], default="push")
    p.add_argument("--url", default="http://127.0.0.1:8470/v1alpha1/progress")
    p.add_argument("--s3-env", default=str(repo / ".cluster" / "env"))
    p.add_argument("--interval", type=float, default=10.0, help="seconds between reports per pod")
    p.add_argument(
        "--final-to-s3",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="push transport: also write the final document to the run folder, as a worker does",
    )
    p.add_argument("--log", help="append accepted reports here: JOB ITERATION REPORTED_AT")
    p.add_argument("--stats", help="write counters here (JSON), every 5 s and at exit")
    p.add_argument("--api-connections", type=int, default=32)
    p.add_argument("--push-connections", type=int, default=64)
    p.add_argument("--s3-threads", type=int, default=16)
    args = p.parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
