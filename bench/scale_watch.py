"""The scale benchmark's watcher: a process of its own that streams the
TrainableJobs and pods of one namespace and writes one JSON line per event,
timestamped when the event arrived (before it is decoded), so the latencies
do not depend on how busy the benchmark's other processes are.

Lines (`t` = time.time() at receipt):
  {"k": "ready", "t": ...}                                once both watches run
  {"k": "j", "t", "e": ADDED|MODIFIED|DELETED, "n": name, "ph": phase,
   "it": lastResult.training_iteration, "ra": lastResult.reported_at}
  {"k": "p", "t", "e", "n": pod, "j": job, "ph": phase, "node": nodeName, "x": exit code}

    python bench/scale_watch.py --namespace NS --out /tmp/events.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_kube import Kube, KubeConfig, cluster_parser, run_until_stopped


def job_record(t: float, etype: str, obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status") or {}
    last = status.get("lastResult") or {}
    it = last.get("training_iteration", status.get("iteration"))
    return {
        "k": "j",
        "t": round(t, 6),
        "e": etype,
        "n": (obj.get("metadata") or {}).get("name"),
        "ph": status.get("phase"),
        "it": it if isinstance(it, int) else None,
        "ra": last.get("reported_at") if isinstance(last.get("reported_at"), float) else None,
    }


def pod_record(t: float, etype: str, obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    exit_code = None
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") == "worker":
            exit_code = ((cs.get("state") or {}).get("terminated") or {}).get("exitCode")
    return {
        "k": "p",
        "t": round(t, 6),
        "e": etype,
        "n": meta.get("name"),
        "j": (meta.get("labels") or {}).get("kubetune.io/job"),
        "ph": status.get("phase"),
        "node": (obj.get("spec") or {}).get("nodeName"),
        "x": exit_code,
        "del": bool(meta.get("deletionTimestamp")),
    }


async def follow(kube: Kube, path: str, kind: str, out: TextIO, started: asyncio.Event) -> None:
    make = job_record if kind == "j" else pod_record
    last: dict[str, tuple[Any, ...]] = {}
    # The namespace is fresh: list it once (its resourceVersion), then watch from there.
    items, rv = await kube.list_all(path)
    now = time.time()
    for item in items:
        out.write(json.dumps(make(now, "ADDED", item)) + "\n")
    started.set()
    async for t, etype, obj in kube.watch(path, resource_version=rv):
        if etype == "RELIST":
            out.write(json.dumps({"k": "relist", "t": t, "what": kind}) + "\n")
            continue
        rec = make(t, etype, obj)
        # drop events that change nothing we measure (resourceVersion-only updates)
        key = tuple(v for k, v in rec.items() if k != "t")
        if last.get(rec["n"]) == key:
            continue
        last[rec["n"]] = key
        out.write(json.dumps(rec) + "\n")


async def amain(args: argparse.Namespace) -> int:
    kube = Kube(KubeConfig.load(Path(args.kubeconfig)), limit=4)
    ns = args.namespace
    out = open(args.out, "a", buffering=1 << 16)  # noqa: SIM115
    ready_j, ready_p = asyncio.Event(), asyncio.Event()
    jobs_path = f"/apis/kubetune.io/v1alpha1/namespaces/{ns}/trainablejobs"
    tasks = [
        asyncio.create_task(follow(kube, jobs_path, "j", out, ready_j)),
        asyncio.create_task(follow(kube, f"/api/v1/namespaces/{ns}/pods", "p", out, ready_p)),
    ]

    async def announce() -> None:
        await ready_j.wait()
        await ready_p.wait()
        out.write(json.dumps({"k": "ready", "t": time.time()}) + "\n")
        out.flush()
        while True:
            await asyncio.sleep(0.5)
            out.flush()

    tasks.append(asyncio.create_task(announce()))

    async def close() -> None:
        out.flush()
        out.close()
        await kube.close()

    return await run_until_stopped(tasks, close, "watcher")


def main(argv: list[str] | None = None) -> int:
    p = cluster_parser("bench/scale_watch.py", __doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    return asyncio.run(amain(p.parse_args(argv)))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
