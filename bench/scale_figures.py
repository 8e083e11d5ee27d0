"""The pure parts of the operator scale benchmark (bench/scale.py): the job
mix and manifests, Prometheus text parsing, percentiles, and the latency
figures computed from the watcher's and the load generator's records.

No clock, no network, no files: everything comes in as arguments, so the unit
tests (tests/unit/bench/test_bench_scale.py) pin each rule.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

KINDS = ("wait", "run", "fin")  # name prefixes of the three kinds of job
KIND_TITLES = {"wait": "waiting", "run": "running", "fin": "finishing"}
DEFAULT_MIX = "wait=5,run=3,fin=2"
TERMINAL = ("Succeeded", "Failed")
# Annotation on the worker pod (set through the job's template): what the load
# generator plays. Its absence leaves the pod alone (a real worker's pod).
PLAY_ANNOTATION = "kubetune.io/loadgen"
GPU = "nvidia.com/gpu"


# --- the job mix ---------------------------------------------------------------
def parse_mix(text: str) -> dict[str, int]:
    """`wait=5,run=3,fin=2` -> weights per kind (any kind may be left out)."""
    weights: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, value = part.partition("=")
        if not sep or kind not in KINDS or not value.isdigit():
            raise ValueError(f"bad mix item {part!r}: write e.g. {DEFAULT_MIX!r}")
        weights[kind] = int(value)
    if sum(weights.values()) <= 0:
        raise ValueError(f"the mix {text!r} has no jobs: write e.g. {DEFAULT_MIX!r}")
    return weights


def job_kinds(count: int, weights: Mapping[str, int]) -> list[str]:
    """`count` kinds spread evenly in creation order (largest remainder per prefix),
    so every stretch of the ramp holds every kind in proportion."""
    total = sum(weights.values())
    out: list[str] = []
    made = dict.fromkeys(weights, 0)
    for i in range(1, count + 1):
        # the kind furthest behind its share after i jobs
        kind = max(weights, key=lambda k: (weights[k] * i / total - made[k], weights[k]))
        made[kind] += 1
        out.append(kind)
    return out


def job_name(kind: str, index: int) -> str:
    return f"{kind}-{index:05d}"


def kind_of(name: str) -> str:
    return name.partition("-")[0]


@dataclass(frozen=True)
class JobSettings:
    bucket: str
    secret: str
    endpoint_url: str | None
    finish_iterations: int = 3  # a finishing job's worker reports this many, then exits 0
    waiting_gpus: int = 8  # more than any node has: the pod stays Pending
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, str]] = ()


RUN_FOREVER = 1_000_000_000  # a running job's stop: never reached in a benchmark


def job_manifest(kind: str, name: str, s: JobSettings) -> dict[str, Any]:
    """One TrainableJob of the mix. Its trainable is never imported: kwok runs no
    process, the load generator plays the worker."""
    storage: dict[str, Any] = {"uri": f"s3://{s.bucket}/runs", "secretRef": {"name": s.secret}}
    if s.endpoint_url:
        storage["endpointURL"] = s.endpoint_url
    spec: dict[str, Any] = {
        "trainable": "bench.loadgen:PlayedByLoadGenerator",
        "config": {"kind": kind},
        "storage": storage,
        "maxFailures": 3,
    }
    if kind == "wait":
        spec["resources"] = {"limits": {GPU: s.waiting_gpus}}
        spec["stop"] = {"training_iteration": RUN_FOREVER}
    else:
        iterations = s.finish_iterations if kind == "fin" else RUN_FOREVER
        spec["stop"] = {"training_iteration": iterations}
        pod_spec: dict[str, Any] = {}
        if s.node_selector:
            pod_spec["nodeSelector"] = dict(s.node_selector)
        if s.tolerations:
            pod_spec["tolerations"] = [dict(t) for t in s.tolerations]
        spec["template"] = {
            "metadata": {"annotations": {PLAY_ANNOTATION: str(iterations)}},
            "spec": pod_spec,
        }
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TrainableJob",
        "metadata": {"name": name, "labels": {"kubetune.io/bench": kind}},
        "spec": spec,
    }


# --- Prometheus text ---------------------------------------------------------------
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_prometheus(text: str, names: Iterable[str] | None = None) -> Samples:
    """Samples of the Prometheus text format: {(name, sorted labels): value}.
    `names` keeps only those metric names (a kube-apiserver scrape is megabytes)."""
    wanted = tuple(names) if names is not None else None
    out: Samples = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        if wanted is not None and not line.startswith(wanted):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        name = m.group(1)
        if wanted is not None and name not in wanted:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(3) or "")))
        try:
            out[(name, labels)] = float(m.group(4))
        except ValueError:
            continue
    return out


def metric_sum(
    samples: Samples,
    name: str,
    exclude: Mapping[str, Iterable[str]] | None = None,
    **match: str | tuple[str, ...],
) -> float:
    """Sum of `name` over the samples whose labels equal `match` (a value may be
    a tuple: any of them) and whose labels are not in `exclude`."""
    total = 0.0
    for (metric, labels), value in samples.items():
        if metric != name:
            continue
        have = dict(labels)
        if any(have.get(k) not in (v if isinstance(v, tuple) else (v,)) for k, v in match.items()):
            continue
        if any(have.get(k) in tuple(v) for k, v in (exclude or {}).items()):
            continue
        total += value
    return total


# Kinds of the apiserver's counter the operator's work shows in.
OPERATOR_RESOURCES = ("trainablejobs", "pods", "secrets", "events")
READ_ONLY_VERBS = ("GET", "LIST", "WATCH", "CONNECT")


def apiserver_counts(samples: Samples) -> dict[str, float]:
    """From `apiserver_request_total`: status writes (trainablejobs/status, any
    writing verb) and requests (not watches) on what the operator touches."""
    name = "apiserver_request_total"
    return {
        "status_writes": metric_sum(
            samples,
            name,
            exclude={"verb": READ_ONLY_VERBS},
            resource="trainablejobs",
            subresource="status",
        ),
        "operator_kind_requests": metric_sum(
            samples, name, exclude={"verb": ("WATCH",)}, resource=OPERATOR_RESOURCES
        ),
    }


# --- percentiles and the latency figures ----------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Latency:
    """A latency figure: measured samples, plus the ones that never happened in
    the observation (censored: at least `censored` seconds each)."""

    samples: list[float] = field(default_factory=list)
    censored: list[float] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.samples) + len(self.censored)

    def pct(self, q: float) -> tuple[float, bool]:
        """(value, is_lower_bound): a censored sample counts as +inf."""
        values = self.samples + [math.inf] * len(self.censored)
        value = percentile(values, q)
        if math.isinf(value):
            return min(self.censored), True
        return value, False

    def text(self) -> str:
        if not self.count:
            return "n/a (none)"
        parts = []
        for q in (50, 99):
            value, lower = self.pct(q)
            parts.append(f"p{q} {'> ' if lower else ''}{_secs(value)}")
        extra = f"; {len(self.censored)} never" if self.censored else ""
        return f"{' / '.join(parts)} (n={self.count}{extra})"


def _secs(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"


@dataclass(frozen=True)
class JobEvent:
    t: float  # when the watcher received it
    name: str
    phase: str | None
    iteration: int | None  # status.lastResult.training_iteration
    reported_at: float | None  # status.lastResult.reported_at


@dataclass(frozen=True)
class PodEvent:
    t: float
    job: str
    name: str
    phase: str | None


def create_to_pod(
    jobs: Iterable[JobEvent], pods: Iterable[PodEvent], end: float
) -> dict[str, Latency]:
    """Per kind: the first event of a job -> the first event of any of its pods.
    A job without a pod by `end` is censored at end - its first event."""
    first_job: dict[str, float] = {}
    for e in jobs:
        first_job.setdefault(e.name, e.t)
    first_pod: dict[str, float] = {}
    for p in pods:
        if p.job not in first_pod or p.t < first_pod[p.job]:
            first_pod[p.job] = p.t
    out: dict[str, Latency] = defaultdict(Latency)
    for name, t0 in first_job.items():
        for key in (kind_of(name), "all"):
            if name in first_pod:
                out[key].samples.append(max(0.0, first_pod[name] - t0))
            else:
                out[key].censored.append(max(0.0, end - t0))
    return dict(out)


def pod_end_to_status(jobs: Iterable[JobEvent], pods: Iterable[PodEvent], end: float) -> Latency:
    """The first event showing a job's worker pod ended (Succeeded or Failed) ->
    the first job event after it with a terminal phase. Censored at `end`."""
    ended: dict[str, float] = {}
    for p in pods:
        if p.phase in TERMINAL and (p.job not in ended or p.t < ended[p.job]):
            ended[p.job] = p.t
    terminal: dict[str, list[float]] = defaultdict(list)
    for e in jobs:
        if e.phase in TERMINAL:
            terminal[e.name].append(e.t)
    lat = Latency()
    for job, t0 in ended.items():
        after = [t for t in terminal.get(job, []) if t >= t0]
        if after:
            lat.samples.append(min(after) - t0)
        elif terminal.get(job):
            lat.samples.append(0.0)  # status said so before the pod event arrived
        else:
            lat.censored.append(max(0.0, end - t0))
    return lat


@dataclass(frozen=True)
class Report:
    job: str
    iteration: int
    sent: float  # the report's reported_at (time.time() when it was sent)


def result_to_status(
    reports: Iterable[Report], jobs: Iterable[JobEvent], end: float, since: float = 0.0
) -> Latency:
    """Each accepted report sent at or after `since` -> the first job event whose
    lastResult shows that iteration or a later one. A status that skips a report
    (coalescing) still ends it once a later one shows. Censored at `end`."""
    shown: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for e in jobs:
        if e.iteration is not None:
            shown[e.name].append((e.t, e.iteration))
    # for each job: times and, from each event on, the highest iteration shown so far
    index: dict[str, tuple[list[float], list[int]]] = {}
    for name, events in shown.items():
        events.sort()
        times, best, top = [], [], -1
        for t, it in events:
            top = max(top, it)
            times.append(t)
            best.append(top)
        index[name] = (times, best)
    lat = Latency()
    for r in reports:
        if r.sent < since:
            continue
        times, best = index.get(r.job, ([], []))
        start = bisect.bisect_left(times, r.sent)
        # best[] is non-decreasing: find the first event from `start` with best >= iteration
        k = bisect.bisect_left(best, r.iteration, lo=start)
        if k < len(times):
            lat.samples.append(times[k] - r.sent)
        else:
            lat.censored.append(max(0.0, end - r.sent))
    return lat


def status_freshness(jobs: Iterable[JobEvent], since: float = 0.0) -> Latency:
    """For each job event carrying a new lastResult.reported_at: receive time - reported_at."""
    seen: dict[str, float] = {}
    lat = Latency()
    for e in sorted(jobs, key=lambda e: e.t):
        if e.reported_at is None or e.t < since or seen.get(e.name) == e.reported_at:
            continue
        seen[e.name] = e.reported_at
        lat.samples.append(max(0.0, e.t - e.reported_at))
    return lat


def rate(before: float, after: float, seconds: float) -> float:
    return (after - before) / seconds if seconds > 0 else math.nan


def peak_rate(series: Sequence[tuple[float, float]], window: float) -> float:
    """The highest rate of a counter over any `window` seconds of (time, value) samples."""
    best = 0.0
    for i, (t0, v0) in enumerate(series):
        for t1, v1 in series[i + 1 :]:
            if t1 - t0 >= window:
                best = max(best, (v1 - v0) / (t1 - t0))
                break
    return best


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:.0f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"
