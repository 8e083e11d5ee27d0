"""Operator scale benchmark (`make bench-scale`): one operator replica, on this
machine, beside the control plane, with 1,000 and 10,000 TrainableJobs.

For each job count it runs one scenario in a fresh namespace:

1. starts the operator as a process watching that namespace (the current one,
   `.venv/bin/kubetune-operator` with its progress and metrics endpoints, or
   with `--operator baseline` the operator of an older git ref, from a
   worktree), a watcher process (bench/scale_watch.py: watch streams on the
   namespace's jobs and pods, each event timestamped on receipt) and the load
   generator (bench/loadgen.py), which plays the workers of the pods kwok runs;
2. creates the jobs at `--rate` per second, a mix of waiting jobs (the worker
   asks for 8 GPUs, no node has them: Pending forever), running jobs (on kwok
   nodes, reporting every `--interval` s) and finishing jobs (on kwok nodes,
   `--finish-iterations` reports, then the pod exits 0);
3. waits until every job has its pod, the running ones run and the finishing
   ones finished (at most `--max-wait` s), then holds `--hold` s with every
   running job reporting;
4. pauses the reports, lets things settle `--settle` s and measures `--quiet` s
   in which nothing changes: operator CPU, status writes, API (and S3)
   requests;
5. prints every figure of the issue's table and writes them as JSON.

Clean-up (namespace, finalizers, processes, and kwok if it started it) runs in
a `finally`. Figures are measurements, not pass/fail checks.

    .venv/bin/python bench/scale.py                       # quick try: 100 jobs
    .venv/bin/python bench/scale.py --jobs 1000,10000     # the issue's scenarios
    .venv/bin/python bench/scale.py --operator baseline --baseline-ref 0d07d7a --jobs 300,1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO)]

import psutil  # noqa: E402
import scale_figures as fig  # noqa: E402
from scale_kube import ApiError, Kube, KubeConfig  # noqa: E402

from localcluster.addons import kwok  # noqa: E402
from localcluster.config import Layout  # noqa: E402
from localcluster.procs import recorded_pid, start_logged  # noqa: E402

BUCKET = "kubetune-bench"
SECRET = "s3-credentials"
GOALS = {  # the table: (at 1,000 jobs, at 10,000 jobs)
    "rss": ("<= 300 MiB", "<= 1 GiB"),
    "cpu": ("<= 5% of a core", "<= 20% of a core"),
    "create": ("p99 <= 2 s", "p99 <= 5 s"),
    "end": ("p99 <= 2 s", "p99 <= 5 s"),
    "result": ("p99 <= 5 s", "p99 <= 30 s"),
    "writes": ("0 when nothing is new; <= 200/s", "same"),
    "api": ("none at a fixed rate (resync >= 60 s)", "same"),
}


# --- processes -----------------------------------------------------------------------
def tree(pid: int) -> list[psutil.Process]:
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(pid: int) -> int:
    total = 0
    for p in tree(pid):
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the process and its live children."""
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def other_operators() -> tuple[list[str], list[str]]:
    """Other kubetune operators on this machine: (acting on our namespaces, not)."""
    acting, beside = [], []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if p.info["pid"] == os.getpid() or "--help" in cmd:
            continue
        if "kubetune-operator" in cmd or "kubetune_operator.main" in cmd:
            line = f"pid {p.info['pid']}: {cmd[:200]}"
            # `--namespace=!bench-*` (a kopf pattern): it leaves the benchmark's jobs alone
            (beside if "!bench-*" in cmd else acting).append(line)
    return acting, beside


class Proc:
    """A child process in its own session, its output in a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name, self.argv, self.log, self.env = name, argv, log, env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_logged(self.argv, self.log, env=self.env, cwd=REPO)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def stop(self, grace: float = 20) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def operator_has_push(python_bin: Path) -> bool:
    exe = python_bin.parent / "kubetune-operator"
    try:
        out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--progress-listen" in out.stdout


def ensure_worktree(ref: str, path: Path) -> str:
    """A git worktree of `ref` at `path` (made once); returns its commit."""
    if not (path / ".git").exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), ref], cwd=REPO, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
    ).stdout.strip()
    want = subprocess.run(
        ["git", "rev-parse", f"{ref}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if head != want:
        raise SystemExit(f"error: {path} is at {head[:10]}, not {ref}: remove it or pick another")
    return head


def read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export ") :].partition("=")
            env[name] = value.strip().strip('"')
    return env


# --- the watcher's records, followed as they are written ------------------------------
@dataclass
class Seen:
    path: Path
    offset: int = 0
    ready: bool = False
    jobs: list[fig.JobEvent] = field(default_factory=list)
    pods: list[fig.PodEvent] = field(default_factory=list)
    phase: dict[str, str | None] = field(default_factory=dict)
    with_pod: set[str] = field(default_factory=set)
    relists: int = 0

    def poll(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            rec = json.loads(line)
            kind = rec["k"]
            if kind == "ready":
                self.ready = True
            elif kind == "relist":
                self.relists += 1
            elif kind == "j" and rec["e"] != "DELETED":
                self.jobs.append(fig.JobEvent(rec["t"], rec["n"], rec["ph"], rec["it"], rec["ra"]))
                self.phase[rec["n"]] = rec["ph"]
            elif kind == "p" and rec["j"] and rec["e"] != "DELETED":
                self.pods.append(fig.PodEvent(rec["t"], rec["j"], rec["n"], rec["ph"]))
                self.with_pod.add(rec["j"])

    def count_phase(self, kind: str, phases: tuple[str, ...]) -> int:
        return sum(1 for n, ph in self.phase.items() if fig.kind_of(n) == kind and ph in phases)


# --- one scenario ----------------------------------------------------------------------
@dataclass
class Sample:
    t: float
    rss: int
    cpu: float
    status_writes: float
    api_kinds: float
    op_api: float | None
    op_s3: float | None


class Scenario:
    def __init__(self, args: argparse.Namespace, count: int, run_dir: Path) -> None:
        self.args = args
        self.count = count
        self.dir = run_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%H%M%S")
        self.ns = f"bench-scale-{count}-{stamp}"
        self.lay = Layout.discover()
        self.cluster_env = read_env(self.lay.env_file)
        self.kube = Kube(KubeConfig.load(self.lay.kubeconfig), limit=64)
        self.seen = Seen(self.dir / "events.jsonl")
        self.samples: list[Sample] = []
        self.marks: dict[str, float] = {}
        self.notes: list[str] = []
        self.create_ms: list[float] = []
        self.create_errors: dict[str, int] = {}
        self.procs: list[Proc] = []
        self.operator: Proc | None = None
        self.loadgen: Proc | None = None
        self.killed: str | None = None
        self.control_plane_cpu: dict[str, float] = {}
        self.loadavg: list[float] = []  # 1-min load average at the start and the end
        self.points: dict[str, Sample] = {}  # scrapes at the marks of the hold and quiet windows

    # -- setup --
    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["KUBECONFIG"] = str(self.lay.kubeconfig)
        env["PYTHONPATH"] = f"{REPO / 'bench'}:{REPO}"
        return env

    def _operator_proc(self) -> Proc:
        a = self.args
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["KUBECONFIG"] = str(self.lay.kubeconfig)
        py = Path(sys.executable)
        if a.operator == "baseline":
            env["PYTHONPATH"] = f"{a.baseline_worktree}/operator:{a.baseline_worktree}/worker"
            argv = [str(py), "-m", "kubetune_operator.main", "--namespace", self.ns]
        else:
            argv = [
                str(py.parent / "kubetune-operator"),
                "--namespace",
                self.ns,
                "--progress-listen",
                f"127.0.0.1:{a.progress_port}",
                "--progress-url",
                f"http://127.0.0.1:{a.progress_port}/v1alpha1/progress",
                "--metrics-listen",
                f"127.0.0.1:{a.metrics_port}",
            ]
        argv += a.operator_arg
        return Proc("operator", argv, self.dir / "operator.log", env)

    async def setup(self) -> None:
        k = self.kube
        await k.request(
            "POST",
            "/api/v1/namespaces",
            body={"metadata": {"name": self.ns, "labels": {"kubetune.io/bench": "scale"}}},
        )
        deadline = time.monotonic() + 60
        while True:  # TokenRequest needs the namespace's default service account
            try:
                await k.request("GET", f"/api/v1/namespaces/{self.ns}/serviceaccounts/default")
                break
            except ApiError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        env = self.cluster_env
        await k.request(
            "POST",
            f"/api/v1/namespaces/{self.ns}/secrets",
            body={
                "metadata": {"name": SECRET},
                "stringData": {
                    "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
                    "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
                },
            },
        )
        py = sys.executable
        watch_argv = [py, str(REPO / "bench" / "scale_watch.py"), "--namespace", self.ns]
        watcher = Proc(
            "watcher",
            [*watch_argv, "--out", str(self.seen.path)],
            self.dir / "watcher.log",
            self._env(),
        )
        watcher.start()
        self.procs.append(watcher)
        deadline = time.monotonic() + 60
        while not self.seen.ready:
            if not watcher.alive() or time.monotonic() > deadline:
                raise SystemExit(f"error: the watcher did not start: see {watcher.log}")
            await asyncio.sleep(0.2)
            self.seen.poll()
        self.operator = self._operator_proc()
        self.operator.start()
        self.procs.append(self.operator)
        self.loadgen = Proc(
            "loadgen",
            [
                py,
                str(REPO / "bench" / "loadgen.py"),
                "--namespace",
                self.ns,
                "--transport",
                self.args.transport,
                "--url",
                f"http://127.0.0.1:{self.args.progress_port}/v1alpha1/progress",
                "--s3-env",
                str(self.lay.env_file),
                "--interval",
                str(self.args.interval),
                "--log",
                str(self.dir / "reports.log"),
                "--stats",
                str(self.dir / "loadgen.json"),
            ],
            self.dir / "loadgen.log",
            self._env(),
        )
        self.loadgen.start()
        self.procs.append(self.loadgen)
        await asyncio.sleep(2)  # the operator's startup (kopf) before the first job
        if not self.operator.alive():
            raise SystemExit(f"error: the operator exited at once: see {self.operator.log}")

    # -- measuring --
    async def _scrape(self) -> Sample:
        assert self.operator is not None
        text = await self.kube.text("/metrics")
        counts = fig.apiserver_counts(fig.parse_prometheus(text, ["apiserver_request_total"]))
        op_api = op_s3 = None
        if self.args.operator != "baseline":
            try:
                import aiohttp

                timeout = aiohttp.ClientTimeout(total=5)
                url = f"http://127.0.0.1:{self.args.metrics_port}/metrics"
                async with aiohttp.ClientSession() as s, s.get(url, timeout=timeout) as resp:
                    body = await resp.text()
                samples = fig.parse_prometheus(
                    body, ["kubetune_api_requests_total", "kubetune_s3_requests_total"]
                )
                op_api = fig.metric_sum(samples, "kubetune_api_requests_total")
                op_s3 = fig.metric_sum(samples, "kubetune_s3_requests_total")
            except Exception:
                pass  # not up yet, or no metrics: the apiserver's counts stand in
        pid = self.operator.pid
        return Sample(
            time.time(),
            tree_rss(pid),
            tree_cpu(pid),
            counts["status_writes"],
            counts["operator_kind_requests"],
            op_api,
            op_s3,
        )

    async def sampler(self) -> None:
        while True:
            try:
                sample = await self._scrape()
                self.samples.append(sample)
                if sample.rss > self.args.rss_limit_mib * 2**20 and self.killed is None:
                    self.killed = (
                        f"operator killed by the benchmark at RSS {fig.fmt_bytes(sample.rss)} "
                        f"(--rss-limit-mib {self.args.rss_limit_mib}), "
                        f"{sample.t - self.marks['start']:.0f} s into the scenario"
                    )
                    print(self.killed, flush=True)
                    assert self.operator is not None
                    self.operator.signal(signal.SIGKILL)
            except Exception as exc:
                print(f"  (sample failed: {exc})", flush=True)
            await asyncio.sleep(self.args.sample_every)

    # -- creating --
    async def create_jobs(self, kinds: list[str]) -> None:
        a = self.args
        settings = fig.JobSettings(
            bucket=BUCKET,
            secret=SECRET,
            endpoint_url=self.cluster_env.get("AWS_ENDPOINT_URL"),
            finish_iterations=a.finish_iterations,
            node_selector=kwok.NODE_SELECTOR,
            tolerations=[kwok.TOLERATION],
        )
        path = f"/apis/kubetune.io/v1alpha1/namespaces/{self.ns}/trainablejobs"
        sem = asyncio.Semaphore(32)
        t0 = time.monotonic()

        async def one(i: int, kind: str) -> None:
            async with sem:
                start = time.monotonic()
                try:
                    await self.kube.request(
                        "POST", path, body=fig.job_manifest(kind, fig.job_name(kind, i), settings)
                    )
                    self.create_ms.append((time.monotonic() - start) * 1000)
                except Exception as exc:
                    key = f"{type(exc).__name__}: {str(exc)[:120]}"
                    self.create_errors[key] = self.create_errors.get(key, 0) + 1

        tasks = []
        for i, kind in enumerate(kinds):
            delay = t0 + i / a.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, kind)))
        await asyncio.gather(*tasks)

    def settled(self, kinds: list[str]) -> bool:
        s = self.seen
        for i, kind in enumerate(kinds):
            name = fig.job_name(kind, i)
            if name not in s.with_pod:
                return False
            phase = s.phase.get(name)
            if kind == "run" and phase != "Running":
                return False
            if kind == "fin" and phase not in fig.TERMINAL:
                return False
        return True

    def progress_line(self, kinds: list[str]) -> str:
        s = self.seen
        want = {k: kinds.count(k) for k in fig.KINDS}
        last = self.samples[-1] if self.samples else None
        rss = fig.fmt_bytes(last.rss) if last else "?"
        return (
            f"  t={time.time() - self.marks['start']:5.0f}s  jobs seen {len(s.phase)}/{len(kinds)}"
            f"  with a pod {len(s.with_pod)}"
            f"  running {s.count_phase('run', ('Running',))}/{want['run']}"
            f"  finished {s.count_phase('fin', fig.TERMINAL)}/{want['fin']}"
            f"  operator RSS {rss}"
        )

    async def run(self) -> dict[str, Any]:
        a = self.args
        kinds = fig.job_kinds(self.count, fig.parse_mix(a.mix))
        self.marks["start"] = time.time()
        self.loadavg.append(os.getloadavg()[0])
        await self.setup()
        sampler = asyncio.create_task(self.sampler())
        try:
            return await self._run(kinds)
        finally:
            sampler.cancel()

    async def _run(self, kinds: list[str]) -> dict[str, Any]:
        a = self.args
        assert self.operator is not None and self.loadgen is not None
        print(f"creating {len(kinds)} jobs at {a.rate}/s in {self.ns}", flush=True)
        self.marks["create"] = time.time()
        creating = asyncio.create_task(self.create_jobs(kinds))
        next_line = 0.0
        while True:
            await asyncio.sleep(1)
            self.seen.poll()
            now = time.time()
            if now >= next_line:
                print(self.progress_line(kinds), flush=True)
                next_line = now + 10
            if creating.done() and "created" not in self.marks:
                self.marks["created"] = now
                creating.result()
            if creating.done() and self.settled(kinds):
                self.marks["settled"] = now
                break
            if "created" in self.marks and now - self.marks["created"] > a.max_wait:
                self.notes.append(
                    f"not settled {a.max_wait:.0f} s (--max-wait) after the last job was "
                    "created: measured what it reached"
                )
                break
            if not self.operator.alive():
                self.notes.append(self.killed or "the operator exited: see operator.log")
                break
        print(self.progress_line(kinds), flush=True)
        if self.operator.alive():
            print(f"holding {a.hold:.0f} s with every running job reporting", flush=True)
            self.marks["hold"] = time.time()
            self.points["hold"] = await self._scrape()
            await asyncio.sleep(a.hold)
            self.loadgen.signal(signal.SIGUSR1)  # nothing changes from here on
            self.marks["pause"] = time.time()
            self.points["pause"] = await self._scrape()
            await asyncio.sleep(a.settle)
            self.seen.poll()
            self.marks["quiet"] = time.time()
            self.points["quiet"] = await self._scrape()
            print(f"quiet window: {a.quiet:.0f} s without reports or new jobs", flush=True)
            await self.measure_control_plane(a.quiet)
            self.points["quiet_end"] = await self._scrape()
            self.marks["quiet_end"] = time.time()
        self.marks["end"] = time.time()
        self.loadavg.append(os.getloadavg()[0])
        self.seen.poll()
        self.loadgen.stop()
        return self.figures(kinds)

    # -- figures --
    def figures(self, kinds: list[str]) -> dict[str, Any]:
        m, s = self.marks, self.seen
        end = m["end"]
        out: dict[str, Any] = {
            "jobs": self.count,
            "namespace": self.ns,
            "mix": {fig.KIND_TITLES[k]: kinds.count(k) for k in fig.KINDS},
            "marks": {k: round(v - m["start"], 1) for k, v in m.items()},
            "notes": list(self.notes),
            "loadavg": self.loadavg,
        }
        if self.killed:
            out["notes"].append(self.killed)
        if self.create_errors:
            out["create_errors"] = self.create_errors
        out["create_api_ms"] = {
            "p50": fig.percentile(self.create_ms, 50),
            "p99": fig.percentile(self.create_ms, 99),
        }
        if self.samples:
            out["rss_peak"] = max(x.rss for x in self.samples)
        c2p = fig.create_to_pod(s.jobs, s.pods, end)
        out["create_to_pod"] = {k: v.text() for k, v in c2p.items()}
        out["pod_end_to_status"] = fig.pod_end_to_status(s.jobs, s.pods, end).text()
        reports = _read_reports(self.dir / "reports.log")
        if "hold" in m:
            lat = fig.result_to_status(
                [r for r in reports if r.sent <= m["pause"]], s.jobs, end, since=m["hold"]
            )
            out["result_to_status"] = lat.text()
            out["status_freshness"] = fig.status_freshness(
                [e for e in s.jobs if e.t <= m["pause"]], since=m["hold"]
            ).text()
            h0, h1 = self.points["hold"], self.points["pause"]
            out["status_writes_per_s_hold"] = fig.rate(
                h0.status_writes, h1.status_writes, h1.t - h0.t
            )
            out["cpu_hold"] = fig.rate(h0.cpu, h1.cpu, h1.t - h0.t)
        series = [(x.t, x.status_writes) for x in self.samples]
        out["status_writes_per_s_peak_10s"] = fig.peak_rate(series, 10)
        if "quiet_end" in m:
            q0, q1 = self.points["quiet"], self.points["quiet_end"]
            minutes = (q1.t - q0.t) / 60
            unfinished = sum(1 for ph in s.phase.values() if ph not in fig.TERMINAL)
            out["rss"] = q1.rss
            out["cpu_quiet"] = fig.rate(q0.cpu, q1.cpu, q1.t - q0.t)
            out["status_writes_quiet"] = q1.status_writes - q0.status_writes
            out["quiet_s"] = q1.t - q0.t
            out["unfinished"] = unfinished
            per = max(unfinished, 1) * minutes
            out["apiserver_requests_per_job_min"] = (q1.api_kinds - q0.api_kinds) / per
            if q0.op_api is not None and q1.op_api is not None:
                out["operator_api_requests_per_job_min"] = (q1.op_api - q0.op_api) / per
            if q0.op_s3 is not None and q1.op_s3 is not None:
                out["operator_s3_requests_per_job_min"] = (q1.op_s3 - q0.op_s3) / per
            out["control_plane_cpu_quiet"] = self.control_plane_cpu
        stats_file = self.dir / "loadgen.json"
        if stats_file.exists():
            out["loadgen"] = json.loads(stats_file.read_text())
        out["final_phases"] = _phase_counts(s.phase)
        out["watch_relists"] = s.relists
        return out

    async def measure_control_plane(self, seconds: float) -> None:
        """CPU of etcd and the apiserver over the quiet window (context for the figures)."""
        pids = {n: recorded_pid(self.lay.pids, n) for n in ("kube-apiserver", "etcd", "kwok")}
        before = {n: tree_cpu(p) for n, p in pids.items() if p}
        await asyncio.sleep(seconds)
        self.control_plane_cpu = {
            n: (tree_cpu(pids[n] or 0) - v) / seconds for n, v in before.items()
        }

    async def cleanup(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        k = self.kube
        with contextlib.suppress(ApiError):
            await k.request("DELETE", f"/api/v1/namespaces/{self.ns}", ok=(200, 202, 404))
        path = f"/apis/kubetune.io/v1alpha1/namespaces/{self.ns}/trainablejobs"
        deadline = time.monotonic() + self.args.cleanup_timeout
        while time.monotonic() < deadline:
            try:
                jobs, _ = await k.list_all(path)
            except ApiError:
                jobs = []
            stuck = [j["metadata"]["name"] for j in jobs if j["metadata"].get("finalizers")]
            # the operator is gone: its finalizers would hold the namespace
            await _strip_finalizers(k, path, stuck)
            try:
                await k.request("GET", f"/api/v1/namespaces/{self.ns}")
            except ApiError as err:
                if err.status == 404:
                    break
            await asyncio.sleep(2)
        else:
            print(f"warning: namespace {self.ns} still there after clean-up", flush=True)
        await k.close()


async def _strip_finalizers(k: Kube, path: str, names: list[str]) -> None:
    sem = asyncio.Semaphore(32)

    async def strip(name: str) -> None:
        async with sem:
            with contextlib.suppress(ApiError):
                await k.patch_merge(f"{path}/{name}", {"metadata": {"finalizers": None}})

    await asyncio.gather(*(strip(n) for n in names))


def _read_reports(path: Path) -> list[fig.Report]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append(fig.Report(parts[0], int(parts[1]), float(parts[2])))
    return out


def _phase_counts(phases: dict[str, str | None]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for name, phase in phases.items():
        kind = fig.KIND_TITLES.get(fig.kind_of(name), "other")
        out.setdefault(kind, {})
        out[kind][str(phase)] = out[kind].get(str(phase), 0) + 1
    return out


# --- the table ------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value * 100:.0f}% of a core"


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def table(r: dict[str, Any], label: str) -> str:
    g = 0 if r["jobs"] <= 1000 else 1
    mix = ", ".join(f"{v} {k}" for k, v in r["mix"].items())
    rows = []
    rss = r.get("rss")
    peak = r.get("rss_peak")
    rss_text = fig.fmt_bytes(rss) if rss is not None else "n/a"
    if peak is not None:
        rss_text += f" (peak {fig.fmt_bytes(peak)})"
    rows.append(("operator RSS (process + children)", rss_text, GOALS["rss"][g]))
    cpu = _pct(r.get("cpu_quiet"))
    if "cpu_hold" in r:
        cpu += f" (all running jobs reporting: {_pct(r['cpu_hold'])})"
    rows.append(("operator CPU while nothing changes", cpu, GOALS["cpu"][g]))
    c2p = r["create_to_pod"]
    created_at = f"create -> worker pod, jobs created at {r['rate']:g}/s"
    rows.append((created_at, c2p.get("all", "n/a"), GOALS["create"][g]))
    for kind in ("wait", "run", "fin"):
        if kind in c2p:
            rows.append((f"  ... {fig.KIND_TITLES[kind]} jobs", c2p[kind], ""))
    rows.append(("worker pod ends -> job status", r["pod_end_to_status"], GOALS["end"][g]))
    rows.append(
        (
            f"reported result -> status (all running jobs reporting, {r['transport']})",
            r.get("result_to_status", "n/a (not held)"),
            GOALS["result"][g],
        )
    )
    if "status_freshness" in r:
        rows.append(("  ... status update -> its reported_at", r["status_freshness"], ""))
    writes = (
        f"nothing changing: {_num(r.get('status_writes_quiet'), 0)} in "
        f"{_num(r.get('quiet_s'), 0)} s; all reporting: "
        f"{_num(r.get('status_writes_per_s_hold'))}/s; peak (10 s) "
        f"{_num(r.get('status_writes_per_s_peak_10s'))}/s"
    )
    rows.append(("status writes", writes, GOALS["writes"][g]))
    unfinished = r.get("unfinished")
    api = f"apiserver: {_num(r.get('apiserver_requests_per_job_min'), 2)}"
    if "operator_api_requests_per_job_min" in r:
        api += f"; operator's count: {_num(r['operator_api_requests_per_job_min'], 2)}"
    if "operator_s3_requests_per_job_min" in r:
        api += f"; S3: {_num(r['operator_s3_requests_per_job_min'], 2)}"
    api += f" (per unfinished job per minute, {unfinished} unfinished, nothing changing)"
    rows.append(("API requests per waiting job", api, GOALS["api"][g]))
    create = r["create_api_ms"]
    post = f"p50 {_num(create['p50'], 0)} ms / p99 {_num(create['p99'], 0)} ms"
    rows.append(("(job create POST, apiserver)", post, ""))
    if r.get("control_plane_cpu_quiet"):
        cp = ", ".join(f"{k} {v * 100:.0f}%" for k, v in r["control_plane_cpu_quiet"].items())
        rows.append(("(control plane CPU, nothing changing)", cp, ""))
    if r.get("loadavg"):
        rows.append(
            ("(machine load average, 1 min)", " -> ".join(f"{x:.1f}" for x in r["loadavg"]), "")
        )
    lg = r.get("loadgen") or {}
    if lg:
        keys = ("accepted", "refused", "http_429", "http_503", "gave_up", "tokens", "completed")
        rows.append(("(load generator)", ", ".join(f"{k} {lg[k]}" for k in keys if k in lg), ""))
    width = max(len(x[0]) for x in rows)
    lines = [
        f"== {r['jobs']} jobs ({mix}); operator: {label} ==",
        *(f"  {a:<{width}}  {b}" + (f"   [goal {c}]" if c else "") for a, b, c in rows),
    ]
    phases = "; ".join(
        f"{k}: " + ", ".join(f"{n} {p}" for p, n in sorted(v.items()))
        for k, v in r["final_phases"].items()
    )
    lines.append(f"  final phases: {phases}")
    for note in r["notes"]:
        lines.append(f"  note: {note}")
    if r.get("create_errors"):
        lines.append(f"  create errors: {r['create_errors']}")
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------
def ensure_cluster(lay: Layout) -> None:
    from localcluster.cluster import healthy

    if not healthy(lay):
        print("the local cluster is not up: starting it (make cluster-up)", flush=True)
        subprocess.run([sys.executable, "-m", "localcluster", "up"], cwd=REPO, check=True)


def prepare(args: argparse.Namespace, lay: Layout) -> tuple[str, bool]:
    """Cluster, CRD, bucket and kwok; returns (operator label, whether kwok was started)."""
    ensure_cluster(lay)
    env = read_env(lay.env_file)
    if args.operator == "baseline":
        commit = ensure_worktree(args.baseline_ref, Path(args.baseline_worktree))
        label = f"baseline {args.baseline_ref} ({commit[:10]}), worktree {args.baseline_worktree}"
        crds = Path(args.baseline_worktree) / "crds"
    else:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "operator", "worker"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
        label = f"current ({head}{' + uncommitted changes' if dirty else ''})"
        crds = REPO / "crds"
    kubectl = [str(lay.bin / "kubectl"), f"--kubeconfig={lay.kubeconfig}"]
    subprocess.run(
        [*kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(crds)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*kubectl, "wait", "--for=condition=Established", "crd/trainablejobs.kubetune.io"],
        check=True,
        capture_output=True,
    )
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    started = recorded_pid(lay.pids, kwok.NAME) is None
    if kwok.up(lay, args.nodes) != 0:
        raise SystemExit("error: kwok did not come up (see above)")
    return label, started


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}, "
        f"{datetime.date.today().isoformat()}"
    )


async def amain(args: argparse.Namespace, label: str) -> list[dict[str, Any]]:
    results = []
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    root = Path(args.out) / f"{stamp}-{args.operator}"
    for count in args.jobs:
        sc = Scenario(args, count, root / f"jobs-{count}")
        print(f"\n=== scenario: {count} jobs, logs in {sc.dir} ===", flush=True)
        try:
            result = await sc.run()
        finally:
            await sc.cleanup()
        result.update(rate=args.rate, transport=args.transport, operator=label)
        (sc.dir / "figures.json").write_text(json.dumps(result, indent=1, default=str))
        samples = [vars(x) for x in sc.samples]
        (sc.dir / "samples.json").write_text(json.dumps(samples, default=str))
        print("\n" + table(result, label), flush=True)
        results.append(result)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/scale.py",
        description="Operator scale benchmark on the local cluster with kwok nodes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--jobs", default="100", help="job counts, one scenario each: 1000,10000")
    p.add_argument("--operator", choices=["current", "baseline"], default="current")
    p.add_argument("--baseline-ref", default="0d07d7a")
    p.add_argument("--baseline-worktree", default="/tmp/kubetune-baseline")
    p.add_argument(
        "--transport",
        choices=["auto", "push", "s3"],
        default="auto",
        help="how the load generator reports: push (the operator's endpoint) or s3 "
        "(progress.json, the design before it); auto: push if the operator has it",
    )
    p.add_argument("--mix", default=fig.DEFAULT_MIX, help="weights of waiting/running/finishing")
    p.add_argument("--rate", type=float, default=20.0, help="jobs created per second")
    p.add_argument("--interval", type=float, default=10.0, help="s between reports per pod")
    p.add_argument("--finish-iterations", type=int, default=3)
    p.add_argument("--nodes", type=int, default=kwok.DEFAULT_NODE_COUNT, help="kwok nodes")
    p.add_argument(
        "--max-wait", type=float, default=600.0, help="cap on settling after the last create"
    )
    p.add_argument("--hold", type=float, default=60.0, help="s with all running jobs reporting")
    p.add_argument("--settle", type=float, default=15.0, help="s after pausing the reports")
    p.add_argument("--quiet", type=float, default=60.0, help="s measured with nothing changing")
    p.add_argument("--sample-every", type=float, default=5.0)
    p.add_argument("--rss-limit-mib", type=int, default=8192, help="kill the operator above")
    p.add_argument("--cleanup-timeout", type=float, default=600.0)
    p.add_argument("--progress-port", type=int, default=8470)
    p.add_argument("--metrics-port", type=int, default=8471)
    p.add_argument("--operator-arg", action="append", default=[], help="extra operator flag")
    p.add_argument("--keep-kwok", action="store_true", help="leave kwok and its nodes up")
    p.add_argument("--ignore-other-operators", action="store_true")
    p.add_argument("--out", default="/tmp/kubetune-bench-scale", help="logs and figures here")
    args = p.parse_args(argv)
    try:
        args.jobs = [int(x) for x in args.jobs.split(",") if x.strip()]
        fig.parse_mix(args.mix)
    except ValueError as err:
        p.error(str(err))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lay = Layout.discover()
    acting, beside = other_operators()
    if acting and not args.ignore_other_operators:
        print(
            "error: another kubetune operator runs on this machine and watches the "
            "benchmark's namespaces (bench-*): it would act on its jobs too. Stop it, start "
            "it with --namespace='!bench-*', or pass --ignore-other-operators:\n  "
            + "\n  ".join(acting),
            file=sys.stderr,
        )
        return 2
    for line in beside:
        print(f"note: another operator shares the cores (not our namespaces): {line}")
    if args.transport == "auto":
        push = args.operator != "baseline" and operator_has_push(Path(sys.executable))
        args.transport = "push" if push else "s3"
    if args.operator != "baseline" and not operator_has_push(Path(sys.executable)):
        print(
            "note: this kubetune-operator has no --progress-listen; use --operator baseline "
            "for the design before the push endpoint",
            file=sys.stderr,
        )
        return 2
    if args.operator != "baseline":
        busy = [p for p in (args.progress_port, args.metrics_port) if not port_free(p)]
        if busy:
            print(
                f"error: port {busy[0]} is in use (another operator, e.g. `make demo`'s?): "
                "stop it, or pick others with --progress-port/--metrics-port",
                file=sys.stderr,
            )
            return 2
    print(f"machine: {machine()}", flush=True)
    label, kwok_started = prepare(args, lay)
    try:
        results = asyncio.run(amain(args, label))
    finally:
        if kwok_started and not args.keep_kwok:
            kwok.down(lay)
    print("\ncommand: " + " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]))
    print(f"figures: {args.out}")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
