"""The local cluster's pure rules without a cluster: node specs, the
kubelet-like phase and status rules, environment building, termination
messages and log selection."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # localcluster lives at the repo root, outside the package dirs
    sys.path.insert(0, str(REPO))

from localcluster.config import NodeSpec, Ports, parse_nodes  # noqa: E402
from localcluster.nodeagent.env import ConfigError, build_env, expand  # noqa: E402
from localcluster.nodeagent.logs import Record, parse_records, select_records  # noqa: E402
from localcluster.nodeagent.runtime import GpuPool  # noqa: E402
from localcluster.nodeagent.status import (  # noqa: E402
    ConditionClock,
    ContainerView,
    build_pod_status,
    build_terminated,
    compute_phase,
    termination_message,
)


@pytest.mark.parametrize(
    ("text", "nodes"),
    [
        ("kt-cpu=0", [NodeSpec("kt-cpu", 0)]),
        (" a=1 , b=2 ,", [NodeSpec("a", 1), NodeSpec("b", 2)]),
    ],
    ids=["one", "spaces-and-trailing-comma"],
)
def test_parse_nodes(text: str, nodes: list[NodeSpec]) -> None:
    assert parse_nodes(text) == nodes


@pytest.mark.parametrize("text", ["", "a", "a=x", "=1", "a=1,a=2"], ids=str)
def test_parse_nodes_refuses_bad_specs_with_the_fix(text: str) -> None:
    with pytest.raises(ValueError, match=r"NAME=GPUS|repeat"):
        parse_nodes(text)


def test_ports_shift_together() -> None:
    shifted = Ports().shifted(1000)
    assert (shifted.apiserver, shifted.s3, shifted.kubelet_base) == (7443, 10000, 11250)


@pytest.mark.parametrize(
    ("text", "out"),
    [
        ("$(A)-$(B)", "1-$(B)"),
        ("$$(A)", "$(A)"),
        ("cost $$5", "cost $5"),
        ("$(A", "$(A"),
    ],
    ids=["defined-and-not", "escaped", "dollar", "unclosed"],
)
def test_expand(text: str, out: str) -> None:
    assert expand(text, {"A": "1"}) == out


def _view(name: str, state: str, exit_code: int = 0, **kw: Any) -> ContainerView:
    view = ContainerView(name=name, image="x", **kw)
    if state == "running":
        view.waiting, view.started_at = None, "t"
    elif state == "done":
        view.waiting, view.started_at = None, "t"
        view.terminated = build_terminated(exit_code, "t", "t", "", 1)
    elif state == "backoff":
        view.waiting = ("CrashLoopBackOff", "")
        view.last_terminated = build_terminated(1, "t", "t", "", 1)
    return view


@pytest.mark.parametrize(
    ("policy", "inits", "apps", "phase"),
    [
        ("Never", [], [("new", 0)], "Pending"),
        ("Never", [], [("running", 0)], "Running"),
        ("Never", [], [("done", 0)], "Succeeded"),
        ("Never", [], [("done", 0), ("done", 2)], "Failed"),
        ("OnFailure", [], [("backoff", 0)], "Running"),
        ("Always", [], [("done", 0)], "Running"),
        ("Never", [("done", 1)], [("new", 0)], "Failed"),
        ("OnFailure", [("done", 1)], [("new", 0)], "Pending"),
        ("Never", [("running", 0)], [("new", 0)], "Pending"),
    ],
    ids=[
        "not-started",
        "running",
        "all-ok",
        "one-failed",
        "restarting",
        "always-never-ends",
        "init-failed-never",
        "init-failed-retries",
        "init-running",
    ],
)
def test_compute_phase(
    policy: str, inits: list[tuple[str, int]], apps: list[tuple[str, int]], phase: str
) -> None:
    init_views = [_view(f"i{n}", s, c, init=True) for n, (s, c) in enumerate(inits)]
    app_views = [_view(f"a{n}", s, c) for n, (s, c) in enumerate(apps)]
    assert compute_phase(policy, init_views, app_views) == phase


def test_terminated_by_signal_reads_like_a_runtime() -> None:
    state = build_terminated(-15, "a", "b", "", 7)
    assert (state["exitCode"], state["signal"], state["reason"]) == (143, 15, "Error")


def test_status_names_only_the_conditions_the_kubelet_owns() -> None:
    patch = build_pod_status(
        uid="u1",
        policy="Never",
        inits=[],
        apps=[_view("main", "done", 0)],
        sandbox_ready=True,
        start_time="t0",
        clock=ConditionClock(),
        now="t1",
    )
    kinds = {c["type"] for c in patch["status"]["conditions"]}
    assert kinds == {"PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"}
    assert patch["metadata"] == {"uid": "u1"}
    assert patch["status"]["phase"] == "Succeeded"
    state = patch["status"]["containerStatuses"][0]["state"]
    assert state["running"] is None and state["terminated"]["exitCode"] == 0


def test_transition_time_moves_only_when_status_flips() -> None:
    clock = ConditionClock()
    first = clock.condition("Ready", False, "t1")
    same = clock.condition("Ready", False, "t2")
    flipped = clock.condition("Ready", True, "t3")
    assert (first["lastTransitionTime"], same["lastTransitionTime"]) == ("t1", "t1")
    assert flipped["lastTransitionTime"] == "t3"


def _lookup(objects: dict[str, dict[str, str]]) -> Any:
    def lookup(name: str, _key: str, optional: bool) -> dict[str, str] | None:
        if name not in objects and not optional:
            raise ConfigError(f"{name} not found")
        return objects.get(name)

    return lookup


def test_env_precedence_and_sources() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"}}, "spec": {}}
    container = {
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "C_"}],
        "env": [
            {"name": "HOME", "value": "/work"},
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "k"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "X", "value": "$(C_K)!"},
            {
                "name": "GONE",
                "valueFrom": {"secretKeyRef": {"name": "no", "key": "k", "optional": True}},
            },
        ],
    }

    env = build_env(
        pod,
        container,
        {"HOME": "/root", "PATH": "/bin"},
        {"KUBERNETES_SERVICE_HOST": "127.0.0.1"},
        _lookup({"sec": {"k": "secret"}}),
        _lookup({"cm": {"K": "v"}}),
    )

    assert env == {
        "HOME": "/work",
        "PATH": "/bin",
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "C_K": "v",
        "S": "secret",
        "APP": "x",
        "X": "v!",
    }


def test_env_missing_secret_is_a_config_error() -> None:
    container = {"env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "x", "key": "k"}}}]}
    with pytest.raises(ConfigError, match="x not found"):
        build_env({"metadata": {}, "spec": {}}, container, {}, {}, _lookup({}), _lookup({}))


@pytest.mark.parametrize(
    ("file_text", "policy", "code", "logs", "message"),
    [
        (b"done", "File", 0, b"", "done"),
        (b"x" * 5000, "File", 0, b"", "x" * 4096),
        (b"", "FallbackToLogsOnError", 1, b"a\nb\n", "a\nb\n"),
        (b"", "FallbackToLogsOnError", 0, b"a\n", ""),
        (b"", "File", 1, b"a\n", ""),
    ],
    ids=["file", "capped", "fallback", "no-fallback-on-success", "no-fallback-by-default"],
)
def test_termination_message(
    file_text: bytes, policy: str, code: int, logs: bytes, message: str
) -> None:
    assert termination_message(file_text, policy, code, logs) == message


def test_log_records_tail_whole_lines_and_since() -> None:
    data = (
        b"2026-01-01T00:00:01.000000000Z stdout F one\n"
        b"2026-01-01T00:00:02.000000000Z stdout P tw\n"
        b"2026-01-01T00:00:02.100000000Z stdout F o\n"
        b"2026-01-01T00:00:03.000000000Z stderr F three\n"
    )
    records = parse_records(data)

    tail = select_records(records, 2, None)
    since = select_records(records, None, "2026-01-01T00:00:03")

    assert b"".join(r.content for r in tail) == b"two\nthree\n"
    assert since == [Record("2026-01-01T00:00:03.000000000Z", b"three\n")]


def test_gpu_pool_hands_out_distinct_ids_and_takes_them_back() -> None:
    pool = GpuPool(2)
    first, second = pool.take(1), pool.take(1)
    assert {tuple(first or []), tuple(second or [])} == {(0,), (1,)}
    assert pool.take(1) is None
    pool.give(first or [])
    assert pool.take(1) == first
