"""The operator's /metrics on the real cluster: scraped while jobs run, are
preempted, crash, suspend, resume and complete, the counters of their
namespace move exactly as the jobs' statuses do, and the operator's own
cost counters and histograms move with them."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import pytest
from operator_fixtures import (
    METRICS_PORT,
    apply,
    get_job,
    job_manifest,
    kubectl,
    phase_is,
    report_figure,
    request_counts,
    set_suspend,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

Series = tuple[str, tuple[tuple[str, str], ...]]


def scrape(port: int = METRICS_PORT) -> dict[Series, float]:
    """Every sample of the operator's /metrics, parsed as Prometheus parses it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Series, float], name: str, **labels: str) -> float:
    """One series' value; 0 when the series does not exist (yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict[Series, float], name: str) -> float:
    """A metric summed over all its series."""
    return sum(v for (n, _), v in samples.items() if n == name)


def iteration(job: dict[str, Any]) -> int:
    return int((job.get("status") or {}).get("iteration") or 0)


def test_metrics_follow_jobs_through_their_lives(job_ns: str) -> None:
    ns = job_ns
    request_counts()  # waits for an operator that was just started to serve
    before = scrape()
    assert value(before, "kubetune_jobs", namespace=ns, phase="Running") == 0

    apply(
        ns,
        job_manifest(
            "life",
            config={"sleep": 0.2},
            stop={"training_iteration": 60},
            checkpoint={"frequency": 5},
        ),
    )
    # Running, with checkpoints: the gauge and the counters show it.
    wait_for(ns, "life", lambda j: phase_is("Running")(j) and iteration(j) >= 12, what="iter 12")
    running = scrape()
    assert value(running, "kubetune_jobs", namespace=ns, phase="Running") == 1
    transitions = "kubetune_job_phase_transitions_total"
    assert value(running, transitions, namespace=ns, phase="Running") >= 1
    first_ckpts = value(running, "kubetune_checkpoints_total", namespace=ns)
    assert first_ckpts >= 1, "no checkpoint counted though status shows iteration >= 12"
    for name in (
        "kubetune_status_writes_total",
        "kubetune_reconciles_total",
        "kubetune_reconcile_duration_seconds_count",
        "kubetune_report_to_status_seconds_count",
        "kubetune_api_requests_total",
    ):
        assert total(running, name) > total(before, name), name
    assert value(running, "kubetune_jobs_watched") >= 1
    assert ("kubetune_workqueue_depth", ()) in running

    # A preemption: the worker pod deleted from outside. It comes first, and
    # the crashing job below runs while life is suspended: life's run (60
    # steps) must outlast only this and the suspend, however loaded the machine.
    pod = get_job(ns, "life")["status"]["workerPod"]
    kubectl("-n", ns, "delete", "pod", pod, "--wait=false")
    wait_for(
        ns, "life", lambda j: (j.get("status") or {}).get("preemptions") == 1, what="preemption"
    )
    wait_for(ns, "life", lambda j: phase_is("Running")(j) and j["status"]["workerPod"] != pod)

    # Suspended: a checkpoint first, then the gauge moves from Running.
    set_suspend(ns, "life", True)
    wait_for(ns, "life", phase_is("Suspended"), timeout=120, what="Suspended")
    suspended = scrape()
    assert value(suspended, "kubetune_jobs", namespace=ns, phase="Suspended") == 1
    assert value(suspended, "kubetune_jobs", namespace=ns, phase="Running") == 0
    for phase in ("Suspending", "Suspended"):
        assert value(suspended, transitions, namespace=ns, phase=phase) == 1, phase
    assert value(suspended, "kubetune_checkpoints_total", namespace=ns) > first_ckpts
    assert value(suspended, "kubetune_job_preemptions_total", namespace=ns) == 1

    # Crashes at iteration 3 on every attempt: one restart, then Failed.
    apply(
        ns,
        job_manifest(
            "crashy", config={"sleep": 0.05, "crash_at": 3}, stop={"training_iteration": 50},
            maxFailures=1,
        ),
    )  # fmt: skip
    wait_for(ns, "crashy", phase_is("Failed"), timeout=120, what="Failed")
    hurt = scrape()
    assert value(hurt, "kubetune_job_failures_total", namespace=ns) == 2
    assert value(hurt, transitions, namespace=ns, phase="Failed") == 1
    assert value(hurt, "kubetune_jobs", namespace=ns, phase="Failed") == 1
    assert value(hurt, "kubetune_job_preemptions_total", namespace=ns) == 1
    # life's after the preemption, and crashy's second attempt.
    assert value(hurt, "kubetune_job_restarts_total", namespace=ns) == 2

    # Resumed and completed.
    set_suspend(ns, "life", False)
    job = wait_for(ns, "life", phase_is("Succeeded"), timeout=180, what="Succeeded")
    time.sleep(0.5)  # the scrape after the write that the watch has already shown
    done = scrape()
    assert value(done, "kubetune_jobs", namespace=ns, phase="Succeeded") == 1
    assert value(done, "kubetune_jobs", namespace=ns, phase="Suspended") == 0
    assert value(done, transitions, namespace=ns, phase="Succeeded") == 1
    assert value(done, "kubetune_job_restarts_total", namespace=ns) == 3  # + the resume
    assert value(done, "kubetune_job_failures_total", namespace=ns) == 2
    ckpts = value(done, "kubetune_checkpoints_total", namespace=ns)
    # At most one per saved checkpoint (every 5th iteration, plus the suspend's
    # and crashy's none); fewer when one was overtaken before its status write.
    assert value(suspended, "kubetune_checkpoints_total", namespace=ns) < ckpts <= 60 / 5 + 2
    assert job["status"]["latestCheckpoint"]["iteration"] == 60
    lag_count = total(done, "kubetune_report_to_status_seconds_count")
    lag_sum = total(done, "kubetune_report_to_status_seconds_sum")
    report_figure(
        f"metrics: {ns} counted {ckpts:.0f} checkpoints, 3 restarts, 2 failures, 1 preemption; "
        f"report-to-status mean {1000 * lag_sum / max(lag_count, 1):.0f} ms over "
        f"{lag_count:.0f} writes (operator lifetime)"
    )

    # Jobs that go leave the gauge.
    kubectl("-n", ns, "delete", "tj", "life", "crashy", "--wait=true", "--timeout=60s")
    deadline = time.monotonic() + 30
    while total_in(scrape(), ns) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert total_in(scrape(), ns) == 0


def total_in(samples: dict[Series, float], namespace: str) -> float:
    return sum(
        v
        for (n, labels), v in samples.items()
        if n == "kubetune_jobs" and dict(labels).get("namespace") == namespace
    )
