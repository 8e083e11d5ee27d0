"""The operator's metrics: what a status write counts, the jobs-by-phase gauge
kept by the cache as jobs change, and the chart's Grafana dashboard querying
only metrics the operator really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from kubetune_operator.cache import ClusterCache
from kubetune_operator.metrics import (
    REGISTRY,
    JobsByPhase,
    StatusChange,
    compute_status_change,
    exported_names,
)

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "charts" / "kubetune" / "dashboards" / "kubetune.json"
CKPT_5 = {"path": "s3://b/ns/j/checkpoint_000005", "iteration": 5}
CKPT_10 = {"path": "s3://b/ns/j/checkpoint_000010", "iteration": 10}


@pytest.mark.parametrize(
    ("old", "new", "want"),
    [
        ({}, {"phase": "Pending", "attempt": 1}, StatusChange(entered_phase="Pending")),
        ({"phase": "Pending", "attempt": 1}, {"phase": "Running", "attempt": 1},
         StatusChange(entered_phase="Running")),
        ({"phase": "Running"}, {"phase": "Running", "latestCheckpoint": CKPT_5},
         StatusChange(new_checkpoint=True)),
        ({"phase": "Running", "latestCheckpoint": CKPT_5},
         {"phase": "Running", "latestCheckpoint": CKPT_5, "lastResult": {"x": 1}},
         StatusChange()),
        ({"phase": "Running", "latestCheckpoint": CKPT_5, "attempt": 1},
         {"phase": "Restarting", "latestCheckpoint": CKPT_10, "attempt": 2, "failures": 1},
         StatusChange(entered_phase="Restarting", new_checkpoint=True, restarts=1, failures=1)),
        ({"phase": "Running", "attempt": 2, "preemptions": 1},
         {"phase": "Restarting", "attempt": 3, "preemptions": 2},
         StatusChange(entered_phase="Restarting", restarts=1, preemptions=1)),
        ({"phase": "Suspended", "attempt": 1}, {"phase": "Pending", "attempt": 2},
         StatusChange(entered_phase="Pending", restarts=1)),
        # A job created again under the same name starts from zero: nothing counts down.
        ({"phase": "Failed", "attempt": 4, "failures": 3}, {"phase": "Pending", "attempt": 1},
         StatusChange(entered_phase="Pending")),
        ({"phase": "Running", "failures": "x"}, {"phase": "Succeeded", "failures": 1},
         StatusChange(entered_phase="Succeeded", failures=1)),
    ],
    ids=["first-write", "starts", "checkpoint", "result-only", "crash", "preempted", "resume",
         "recreated", "garbage-count"],
)  # fmt: skip
def test_compute_status_change(
    old: dict[str, Any], new: dict[str, Any], want: StatusChange
) -> None:
    assert compute_status_change(old, new) == want


def job(ns: str, name: str, phase: str | None = None, rv: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"namespace": ns, "name": name, "uid": f"u-{name}", "resourceVersion": str(rv)}
    }
    if phase:
        body["status"] = {"phase": phase}
    return body


def test_cache_counts_jobs_by_phase_as_they_change() -> None:
    cache = ClusterCache()
    cache.put_job(job("a", "j1"))
    cache.put_job(job("a", "j2", "Running"))
    cache.put_job(job("b", "j1", "Running"))
    assert cache.phase_counts() == {("a", "Pending"): 1, ("a", "Running"): 1, ("b", "Running"): 1}
    cache.put_job(job("a", "j1", "Running", rv=2))
    cache.put_job(job("a", "j2", "Succeeded", rv=3))
    # An older watch event than what is kept changes nothing.
    cache.put_job(job("a", "j2", "Running", rv=2), from_watch=True)
    assert cache.phase_counts() == {("a", "Running"): 1, ("a", "Succeeded"): 1, ("b", "Running"): 1}
    cache.forget_job(("a", "j1"))
    cache.forget_job(("a", "j1"))  # twice: no negative count
    cache.forget_job(("b", "j1"))
    assert cache.phase_counts() == {("a", "Succeeded"): 1}


def test_jobs_by_phase_gauge_reads_the_counts_at_scrape_time() -> None:
    registry = CollectorRegistry()
    collector = JobsByPhase()
    registry.register(collector)
    counts = {("a", "Running"): 2, ("b", "Failed"): 1, ("c", "Pending"): 0}
    collector.watch(lambda: counts)
    samples = {
        (s.labels["namespace"], s.labels["phase"]): s.value
        for family in registry.collect()
        for s in family.samples
    }
    assert samples == {("a", "Running"): 2.0, ("b", "Failed"): 1.0}
    counts[("a", "Running")] = 5
    assert registry.get_sample_value("kubetune_jobs", {"namespace": "a", "phase": "Running"}) == 5


def test_exported_names_include_every_sample_suffix() -> None:
    registry = CollectorRegistry()
    Counter("x_total", "x", ["l"], registry=registry)
    Histogram("y_seconds", "y", registry=registry)
    names = exported_names(registry)
    assert {"x_total", "y_seconds_bucket", "y_seconds_sum", "y_seconds_count"} <= names
    assert "x_bucket" not in names


def test_docs_list_exactly_the_operator_metrics() -> None:
    exported = {
        f.name + ("_total" if f.type == "counter" else "")
        for f in REGISTRY.collect()
        if f.name.startswith("kubetune_")
    }
    docs = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `(kubetune_\w+)` \|", docs, re.MULTILINE))
    assert exported == listed, (
        f"docs/metrics.md lacks {sorted(exported - listed)}, "
        f"lists unknown {sorted(listed - exported)}"
    )


# Grafana's variables, replaced by what they expand to, so the query parses as PromQL.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$namespace": ".*"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects, from its syntax tree."""
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}: add it to GRAFANA_VARS"
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            named = [m.value for m in node.matchers.matchers if m.name == "__name__"]
            names.update([node.name] if node.name else named)
            return
        if isinstance(node, promql_parser.MatrixSelector):
            walk(node.vector_selector)
        for attr in ("expr", "lhs", "rhs", "param"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(node, promql_parser.MatrixSelector):
                walk(child)
        for arg in getattr(node, "args", None) or ():
            walk(arg)

    walk(promql_parser.parse(expr))
    return names


def dashboard_queries(node: Any) -> list[str]:
    """Every `expr` of a panel target and every variable's query, anywhere in the JSON."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                found.append(value)
            elif key == "definition" and isinstance(value, str):
                # Grafana's label_values(METRIC, LABEL) is not PromQL: its METRIC is.
                m = re.fullmatch(r"label_values\((.+),\s*\w+\)", value.strip())
                assert m, f"unexpected variable query {value!r}"
                found.append(m.group(1))
            else:
                found.extend(dashboard_queries(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(dashboard_queries(item))
    return found


def test_metric_names_are_read_from_the_syntax_tree() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le) (rate(a_bucket{phase="b"}[$__rate_interval])))'
        ' / on (x) group_left c + -{__name__="d"} offset 5m'
    )
    assert metric_names(expr) == {"a_bucket", "c", "d"}


def test_dashboard_queries_only_metrics_the_operator_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 15
    used = set().union(*(metric_names(q) for q in queries))
    unknown = sorted(used - exported_names())
    assert not unknown, f"the dashboard queries metrics the operator does not export: {unknown}"
    # And it shows the jobs, their checkpoints and the status lag at least.
    assert {"kubetune_jobs", "kubetune_checkpoints_total"} <= used
    assert "kubetune_report_to_status_seconds_bucket" in used


def test_the_exposition_parses_and_has_the_jobs_gauge() -> None:
    from prometheus_client import generate_latest

    families = {f.name for f in text_string_to_metric_families(generate_latest().decode())}
    assert "kubetune_jobs" in families
    assert "kubetune_job_phase_transitions" in families
