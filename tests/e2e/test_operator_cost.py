"""What a job costs the operator while nothing about it changes, counted by the
operator's own metrics on the real cluster: a suspended job and a job waiting
for GPUs cost no API request and no S3 request between resyncs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from operator_fixtures import (
    OperatorProcess,
    apply,
    get_job,
    job_manifest,
    job_pods,
    kubectl,
    phase_is,
    report_figure,
    request_counts,
    served_by_test_operator,
    set_suspend,
    wait_for,
)

pytestmark = pytest.mark.e2e

QUIET_S = 20


def unfinished_jobs_elsewhere(namespace: str) -> list[str]:
    row = "{.metadata.namespace}/{.metadata.name}={.status.phase}{'\\n'}"
    out = kubectl(
        "get", "tj", "--all-namespaces", "-o", f"jsonpath={{range .items[*]}}{row}{{end}}"
    )
    busy = []
    for line in out.stdout.splitlines():
        where, _, phase = line.partition("=")
        ns = where.split("/")[0]
        ours = ns != namespace and served_by_test_operator(ns)
        if ours and phase not in ("Succeeded", "Failed", "Suspended"):
            busy.append(line)
    return busy


def eventually(check: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_suspended_and_waiting_jobs_cost_no_requests(
    job_ns: str, operator: OperatorProcess
) -> None:
    # Other tests' jobs would move the operator's counters: wait until none runs.
    eventually(lambda: not unfinished_jobs_elsewhere(job_ns), 180, "other tests' jobs to end")

    manifest = job_manifest(
        "paused",
        config={"sleep": 0.1},
        stop={"training_iteration": 500},
        checkpoint={"frequency": 5},
    )
    apply(job_ns, manifest)
    wait_for(job_ns, "paused", lambda j: iteration_of(j) >= 3, timeout=120)
    set_suspend(job_ns, "paused", True)
    suspended = wait_for(job_ns, "paused", phase_is("Suspended"), timeout=120)

    # No node has 8 GPUs: its worker pod stays Pending, as in a full GPU cluster.
    apply(job_ns, job_manifest("waiting", resources={"limits": {"nvidia.com/gpu": 8}}))
    eventually(lambda: job_pods(job_ns, "waiting"), 60, "the waiting job's pod")
    wait_for(job_ns, "waiting", lambda j: "Unschedulable" in str(j.get("status")), timeout=60)
    time.sleep(2)  # let the last events of both settle

    before = request_counts()
    time.sleep(QUIET_S)
    after = request_counts()
    moved = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    report_figure(
        f"operator cost over {QUIET_S}s with a suspended and a waiting job: "
        f"{sum(moved.values()):.0f} API/S3 requests"
    )
    assert moved == {}, f"requests while nothing changed: {moved}"

    # And it still acts at once when something does change: resumed from its checkpoint.
    set_suspend(job_ns, "paused", False)
    saved = suspended["status"]["latestCheckpoint"]["iteration"]
    wait_for(job_ns, "paused", lambda j: iteration_of(j) > saved, timeout=60)
    assert get_job(job_ns, "paused")["status"]["phase"] == "Running"


def iteration_of(job: dict[str, Any]) -> int:
    return int((job.get("status") or {}).get("iteration") or 0)
