"""The operator's Prometheus metrics: what it costs (API and S3 requests,
status writes, reconciles) and how far status lags the worker, so the cost
of one job can be measured rather than guessed."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
