"""The operator's Prometheus metrics: what it costs (API and S3 requests,
status writes, reconciles), how far status lags the worker, and what the jobs
do (phases, checkpoints, restarts, failures, preemptions), so the cost of one
job can be measured rather than guessed and a dashboard can show the fleet.

Every metric is listed in docs/metrics.md; the chart's Grafana dashboard may
name only these (a unit test checks it). What happens to jobs is counted from
the status writes the operator makes itself (`record_status_change`), so a
change is counted once, by the operator that wrote it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

API_REQUESTS = Counter(
    "kubetune_api_requests_total",
    "Kubernetes API requests made by the operator (watches excluded)",
    ["verb", "resource"],
)
API_ERRORS = Counter(
    "kubetune_api_errors_total",
    "Kubernetes API requests that failed, by HTTP status (0: no answer)",
    ["verb", "resource", "code"],
)
RECONCILE_RETRIES = Counter(
    "kubetune_reconcile_retries_total",
    "Reconciles run again: `conflict` (a status write lost to a newer resourceVersion, "
    "decided again at once), `error` (an API or S3 failure, retried with backoff)",
    ["reason"],
)
S3_REQUESTS = Counter(
    "kubetune_s3_requests_total", "S3 requests made by the operator", ["operation"]
)
STATUS_WRITES = Counter("kubetune_status_writes_total", "TrainableJob status writes")
RECONCILES = Counter("kubetune_reconciles_total", "Reconciles run", ["outcome"])
RECONCILE_SECONDS = Histogram(
    "kubetune_reconcile_duration_seconds",
    "Time one reconcile took",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUEUE_DEPTH = Gauge("kubetune_workqueue_depth", "Jobs waiting to be reconciled")
JOBS_CACHED = Gauge("kubetune_jobs_watched", "TrainableJobs the operator watches")
PROGRESS_REPORTS = Counter(
    "kubetune_progress_reports_total",
    "Progress reports pushed by workers, by outcome",
    ["outcome"],
)
TOKEN_REVIEWS = Counter("kubetune_token_reviews_total", "TokenReviews made for progress reports")
REPORT_TO_STATUS_SECONDS = Histogram(
    "kubetune_report_to_status_seconds",
    "From a progress report's arrival to the status write that carries it",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
)
SWEEP_RECONCILES = Counter(
    "kubetune_sweep_reconciles_total", "TrainableSweep reconciles, by outcome", ["outcome"]
)
PHASE_TRANSITIONS = Counter(
    "kubetune_job_phase_transitions_total",
    "TrainableJobs moved into a phase by the operator's status writes",
    ["namespace", "phase"],
)
CHECKPOINTS = Counter(
    "kubetune_checkpoints_total",
    "Committed checkpoints the operator saw and wrote to a job's status.latestCheckpoint",
    ["namespace"],
)
RESTARTS = Counter(
    "kubetune_job_restarts_total",
    "Worker pods started again for a job (after a failure, a preemption or a resume)",
    ["namespace"],
)
FAILURES = Counter(
    "kubetune_job_failures_total",
    "Worker attempts that ended in failure (status.failures went up)",
    ["namespace"],
)
PREEMPTIONS = Counter(
    "kubetune_job_preemptions_total",
    "Worker attempts stopped from outside: eviction, node loss, Kueue (status.preemptions went up)",
    ["namespace"],
)

PhaseCounts = Mapping[tuple[str, str], int]  # (namespace, phase) -> jobs


class JobsByPhase(Collector):
    """`kubetune_jobs{namespace, phase}`, read at scrape time from counts the
    operator's cache keeps up to date as jobs change (O(1) per change). A scrape
    costs O(namespaces x phases), never a pass over the jobs."""

    NAME = "kubetune_jobs"

    def __init__(self) -> None:
        self._source: Callable[[], PhaseCounts] = dict

    def watch(self, source: Callable[[], PhaseCounts]) -> None:
        """Read the counts from `source` (the operator's cache) from now on."""
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            self.NAME,
            "TrainableJobs the operator watches, by namespace and phase",
            labels=["namespace", "phase"],
        )
        for (namespace, phase), count in sorted(self._source().items()):
            if count:
                family.add_metric([namespace, phase], count)
        yield family


JOBS = JobsByPhase()
REGISTRY.register(JOBS)


@dataclass(frozen=True)
class StatusChange:
    """What one status write did to a job, as the counters count it."""

    entered_phase: str | None = None  # set only when the phase changed
    new_checkpoint: bool = False
    restarts: int = 0
    failures: int = 0
    preemptions: int = 0


def _int(status: Mapping[str, Any], key: str) -> int:
    try:
        return int(status.get(key) or 0)
    except (TypeError, ValueError):
        return 0


def compute_status_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> StatusChange:
    """Compare a job's status before and after a write. A restart is a new
    attempt after the first (`attempt` counts worker pods started); counters
    only ever move up, so a status that went back (a job created again under
    the same name starts at zero) counts nothing."""
    old_phase, new_phase = old.get("phase"), new.get("phase")
    old_ckpt = (old.get("latestCheckpoint") or {}).get("path")
    new_ckpt = (new.get("latestCheckpoint") or {}).get("path")
    attempts = max(0, _int(new, "attempt") - max(1, _int(old, "attempt")))
    return StatusChange(
        entered_phase=str(new_phase) if new_phase and new_phase != old_phase else None,
        new_checkpoint=bool(new_ckpt) and new_ckpt != old_ckpt,
        restarts=attempts,
        failures=max(0, _int(new, "failures") - _int(old, "failures")),
        preemptions=max(0, _int(new, "preemptions") - _int(old, "preemptions")),
    )


def record_status_change(namespace: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Count what a status write that succeeded did to a job."""
    change = compute_status_change(old, new)
    if change.entered_phase:
        PHASE_TRANSITIONS.labels(namespace, change.entered_phase).inc()
    if change.new_checkpoint:
        CHECKPOINTS.labels(namespace).inc()
    if change.restarts:
        RESTARTS.labels(namespace).inc(change.restarts)
    if change.failures:
        FAILURES.labels(namespace).inc(change.failures)
    if change.preemptions:
        PREEMPTIONS.labels(namespace).inc(change.preemptions)


def exported_names(registry: CollectorRegistry = REGISTRY) -> set[str]:
    """Every sample name the registry can export (counters' `_total`,
    histograms' `_bucket`/`_sum`/`_count`, ...), for checks of what a
    dashboard or alert may query. Labelled metrics with no series yet count."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ()))
    return names
