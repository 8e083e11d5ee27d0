"""The pure parts of the operator scale benchmark (bench/scale_figures.py,
bench/loadgen.py): job mix, Prometheus parsing, percentiles, the latency
figures and the load generator's progress documents."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
for folder in (REPO, REPO / "bench"):  # bench/ is scripts, and they import localcluster
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import loadgen  # noqa: E402
import scale_figures as fig  # noqa: E402
from scale_figures import JobEvent, PodEvent, Report  # noqa: E402


# --- mix and manifests ---------------------------------------------------------------
def test_the_mix_is_spread_evenly_in_creation_order() -> None:
    weights = fig.parse_mix("wait=5,run=3,fin=2")
    kinds = fig.job_kinds(1000, weights)
    assert [kinds.count(k) for k in ("wait", "run", "fin")] == [500, 300, 200]
    first = kinds[:10]
    assert sorted(first) == sorted(["wait"] * 5 + ["run"] * 3 + ["fin"] * 2)
    assert fig.job_kinds(3, fig.parse_mix("run=1")) == ["run"] * 3


@pytest.mark.parametrize("bad", ["", "wait=0", "idle=3", "wait=x", "wait"])
def test_a_bad_mix_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        fig.parse_mix(bad)


def test_job_manifests_of_each_kind() -> None:
    s = fig.JobSettings(
        bucket="b",
        secret="creds",
        endpoint_url="http://127.0.0.1:9000",
        finish_iterations=4,
        node_selector={"type": "kwok"},
        tolerations=[{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
    )
    wait = fig.job_manifest("wait", "wait-00000", s)
    assert wait["spec"]["resources"] == {"limits": {"nvidia.com/gpu": 8}}
    assert "template" not in wait["spec"]
    assert wait["spec"]["storage"] == {
        "uri": "s3://b/runs",
        "secretRef": {"name": "creds"},
        "endpointURL": "http://127.0.0.1:9000",
    }
    fin = fig.job_manifest("fin", "fin-00001", s)
    assert fin["spec"]["stop"] == {"training_iteration": 4}
    assert fin["spec"]["template"]["spec"]["nodeSelector"] == {"type": "kwok"}
    assert fin["spec"]["template"]["metadata"]["annotations"] == {fig.PLAY_ANNOTATION: "4"}
    run = fig.job_manifest("run", "run-00002", s)
    assert run["spec"]["stop"]["training_iteration"] == fig.RUN_FOREVER
    assert fig.kind_of("run-00002") == "run"


# --- Prometheus text -----------------------------------------------------------------------
PROM = """\
# HELP apiserver_request_total Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",resource="trainablejobs",scope="resource",subresource="status",verb="PUT",version="v1alpha1"} 120
apiserver_request_total{code="409",component="apiserver",resource="trainablejobs",scope="resource",subresource="status",verb="PUT",version="v1alpha1"} 3
apiserver_request_total{code="200",component="apiserver",resource="trainablejobs",scope="resource",subresource="",verb="GET",version="v1alpha1"} 1000
apiserver_request_total{code="200",component="apiserver",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 900
apiserver_request_total{code="200",component="apiserver",resource="pods",scope="namespace",subresource="",verb="WATCH",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 500
apiserver_request_total_other 5
kubetune_api_requests_total{verb="get",resource="trainablejobs"} 4
kubetune_api_requests_total{verb="patch",resource="trainablejobs/status"} 2.5e1
kubetune_s3_requests_total{operation="GetObject"} 3
"""  # noqa: E501


def test_prometheus_text_is_parsed_and_summed_by_label() -> None:
    samples = fig.parse_prometheus(PROM)
    assert fig.metric_sum(samples, "kubetune_api_requests_total") == 29
    assert fig.metric_sum(samples, "kubetune_api_requests_total", verb="get") == 4
    assert fig.metric_sum(samples, "kubetune_s3_requests_total") == 3
    assert fig.metric_sum(samples, "apiserver_request_total", resource=("pods", "leases")) == 1407
    only = fig.parse_prometheus(PROM, ["apiserver_request_total"])
    assert {name for name, _ in only} == {"apiserver_request_total"}


def test_apiserver_counts_status_writes_and_the_operators_kinds() -> None:
    counts = fig.apiserver_counts(fig.parse_prometheus(PROM))
    assert counts["status_writes"] == 123  # every write to the status subresource
    assert counts["operator_kind_requests"] == 120 + 3 + 1000 + 900  # no watches, no leases


# --- percentiles and latencies ------------------------------------------------------------
def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))
    assert fig.percentile(values, 50) == 50
    assert fig.percentile(values, 99) == 99
    assert fig.percentile([3.0], 99) == 3.0
    assert math.isnan(fig.percentile([], 50))


def test_a_latency_with_censored_samples_is_a_lower_bound() -> None:
    lat = fig.Latency(samples=[1.0] * 98, censored=[300.0, 250.0])
    assert lat.pct(50) == (1.0, False)
    assert lat.pct(99) == (250.0, True)
    assert "p99 > 250 s" in lat.text() and "2 never" in lat.text()
    assert fig.Latency().text() == "n/a (none)"


def _job(t: float, name: str, phase: str | None = None, it: int | None = None) -> JobEvent:
    return JobEvent(t, name, phase, it, None)


def test_create_to_pod_per_kind_with_jobs_that_never_got_one() -> None:
    jobs = [_job(0, "wait-00000"), _job(1, "run-00001"), _job(2, "run-00002")]
    pods = [PodEvent(0.5, "wait-00000", "p0", "Pending"), PodEvent(4, "run-00001", "p1", None)]
    out = fig.create_to_pod(jobs, pods, end=12)
    assert out["wait"].samples == [0.5]
    assert out["run"].samples == [3.0]
    assert out["run"].censored == [10.0]
    assert out["all"].count == 3


def test_pod_end_to_status() -> None:
    jobs = [
        _job(1, "fin-1", "Running"),
        _job(5.5, "fin-1", "Succeeded"),
        _job(3, "fin-2", "Succeeded"),  # status before the pod event reached the watcher
    ]
    pods = [
        PodEvent(5, "fin-1", "a", "Succeeded"),
        PodEvent(4, "fin-2", "b", "Succeeded"),
        PodEvent(6, "fin-3", "c", "Failed"),
    ]
    lat = fig.pod_end_to_status(jobs, pods, end=16)
    assert sorted(lat.samples) == [0.0, 0.5]
    assert lat.censored == [10.0]


def test_result_to_status_counts_coalesced_reports_until_a_later_one_shows() -> None:
    reports = [Report("r", 1, 10.0), Report("r", 2, 20.0), Report("r", 3, 30.0)]
    jobs = [_job(11.0, "r", "Running", 1), _job(32.0, "r", "Running", 3)]  # 2 never shown itself
    lat = fig.result_to_status(reports, jobs, end=100)
    assert lat.samples == [1.0, 12.0, 2.0]
    # a report sent after the last status showing it is censored
    late = fig.result_to_status([Report("r", 4, 40.0)], jobs, end=100)
    assert late.censored == [60.0]
    # an old status event (before the report was sent) never counts for it
    again = fig.result_to_status([Report("r", 1, 50.0)], jobs, end=60)
    assert again.censored == [10.0]
    assert fig.result_to_status(reports, jobs, end=100, since=15).count == 2


def test_status_freshness_counts_each_new_reported_at_once() -> None:
    jobs = [
        JobEvent(10.5, "r", "Running", 1, 10.0),
        JobEvent(10.7, "r", "Running", 1, 10.0),  # another status change, same result
        JobEvent(21.0, "r", "Running", 2, 20.0),
    ]
    lat = fig.status_freshness(jobs)
    assert lat.samples == [0.5, 1.0]


def test_rates() -> None:
    assert fig.rate(10, 70, 60) == 1.0
    series = [(0.0, 0.0), (5.0, 10.0), (10.0, 100.0), (15.0, 110.0), (20.0, 120.0)]
    assert fig.peak_rate(series, 10) == 10.0  # 0 -> 100 over 10 s
    assert fig.fmt_bytes(300 * 2**20) == "300 MiB"
    assert fig.fmt_bytes(3 * 2**30) == "3.00 GiB"


# --- the load generator ----------------------------------------------------------------------
def test_progress_documents_match_the_workers_shape() -> None:
    doc = loadgen.progress_doc("uid-1", 7, now=1000.5, started=990.0)
    assert set(doc) == {
        "run_id",
        "state",
        "reason",
        "message",
        "iteration",
        "last_result",
        "updated",
        "latest_checkpoint",
        "best_checkpoint",
        "checkpoints",
        "restored_from",
        "failures",
    }
    assert doc["run_id"] == "uid-1" and doc["state"] == "running" and doc["iteration"] == 7
    assert doc["last_result"]["training_iteration"] == 7
    assert doc["last_result"]["reported_at"] == 1000.5 == doc["updated"]
    assert doc["last_result"]["time_total_s"] == 10.5
    final = loadgen.progress_doc("uid-1", 7, state="completed", now=1001.0, started=990.0)
    assert final["state"] == "completed" and final["last_result"]["done"] is True
    assert json.loads(loadgen.encode_doc(doc)) == doc


def test_the_progress_document_has_the_same_keys_as_the_workers() -> None:
    from kubetune.runtime.progress_builder import build_progress

    ours = loadgen.progress_doc("u", 1, now=1.0, started=0.0)
    theirs = build_progress(
        run_id="u",
        state="running",
        reason="",
        message="",
        iteration=1,
        last_result={"training_iteration": 1},
        latest=None,
        best=None,
        checkpoints=[],
        restored_from=None,
    ).to_dict()
    assert set(ours) == set(theirs)


def test_an_oversized_document_is_refused_before_sending() -> None:
    doc = loadgen.progress_doc("u", 1, now=1.0, started=0.0)
    doc["message"] = "x" * (64 * 1024)
    with pytest.raises(ValueError, match="64 KiB"):
        loadgen.encode_doc(doc)


def _pod(**over) -> dict:
    spec_env = {
        "run_id": "uid-9",
        "run_uri": "s3://b/runs/ns/fin-1",
        "stop": {"training_iteration": 3},
    }
    pod = {
        "metadata": {
            "name": "fin-1-worker-1",
            "namespace": "ns",
            "uid": "pod-uid",
            "labels": {"kubetune.io/job": "fin-1", "kubetune.io/job-uid": "uid-9"},
            "annotations": {fig.PLAY_ANNOTATION: "3"},
        },
        "spec": {
            "nodeName": "kwok-node-0003",
            "serviceAccountName": "default",
            "containers": [
                {
                    "name": "worker",
                    "env": [{"name": loadgen.WORKER_SPEC_ENV, "value": json.dumps(spec_env)}],
                }
            ],
        },
        "status": {"phase": "Running"},
    }
    for path, value in over.items():
        section, key = path.split("__")
        pod[section][key] = value
    return pod


def test_the_load_generator_plays_running_annotated_pods_on_kwok_nodes_only() -> None:
    played = loadgen.played_from_pod(_pod())
    assert played == loadgen.Played(
        namespace="ns",
        pod="fin-1-worker-1",
        pod_uid="pod-uid",
        job="fin-1",
        run_id="uid-9",
        run_uri="s3://b/runs/ns/fin-1",
        iterations=3,
        service_account="default",
    )
    assert loadgen.played_from_pod(_pod(spec__nodeName="kt-gpu1")) is None
    assert loadgen.played_from_pod(_pod(status__phase="Pending")) is None
    assert loadgen.played_from_pod(_pod(metadata__annotations={})) is None
    assert loadgen.played_from_pod(_pod(metadata__deletionTimestamp="2026-01-01T00:00:00Z")) is None
    done = {fig.PLAY_ANNOTATION: "3", "kubetune.io/kwok-exit": "0"}
    assert loadgen.played_from_pod(_pod(metadata__annotations=done)) is None


def test_without_a_worker_spec_the_pod_labels_and_annotation_stand_in() -> None:
    pod = _pod()
    pod["spec"]["containers"][0]["env"] = []
    played = loadgen.played_from_pod(pod)
    assert played is not None
    assert (played.run_id, played.iterations, played.run_uri) == ("uid-9", 3, None)


def test_retry_after() -> None:
    assert loadgen.retry_after("3") == 3.0
    assert loadgen.retry_after(None) == 1.0
    assert loadgen.retry_after("soon", default=2) == 2
