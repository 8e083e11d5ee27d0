"""The cluster commands of `kubetune` without a cluster: argument parsing, the
pure renderings (get table, describe, progress line, outcome, results) from
sample job bodies, the watcher on a terminal and through a pipe fed with a
fake event sequence, and the one-line errors, against a fake of the client's
Kube."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from urllib3.exceptions import ProtocolError

from kubetune.cli import command as cli
from kubetune.cli.args import (
    check_trainable,
    parse_config_args,
    parse_pairs,
    parse_resources,
    parse_value,
)
from kubetune.cli.render import (
    age,
    human_duration,
    metric_of,
    outcome,
    progress_line,
    render_jobs,
)
from kubetune.cli.render_describe import render_describe
from kubetune.cli.render_results import (
    render_results_csv,
    render_results_json,
    render_results_table,
    result_rows,
)
from kubetune.cli.watch import CLEAR_LINE, JobDeleted, Watcher, job_updates
from kubetune.client import kube as kube_module
from kubetune.sdk.errors import InvalidSettings

NOW = datetime(2026, 11, 30, 15, 0, 0, tzinfo=timezone.utc)


def stamp(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def job(
    name: str = "mnist",
    phase: str | None = "Running",
    iteration: int | None = 12,
    checkpoint: int | None = 10,
    stop: dict[str, Any] | None = None,
    score: str | None = None,
    result: dict[str, Any] | None = None,
    rv: str = "1",
    **status: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "trainable": "examples.mnist:MNIST",
        "config": {"lr": 0.01},
        "stop": {"training_iteration": 30} if stop is None else stop,
        "storage": {
            "uri": "s3://bucket/runs/",
            "endpointURL": "http://minio:9000",
            "secretRef": {"name": "s3-credentials"},
        },
        "checkpoint": {"frequency": 10, "atEnd": True},
    }
    if score:
        spec["checkpoint"].update(scoreAttribute=score, scoreOrder="max")
    st: dict[str, Any] = {}
    if phase:
        st["phase"] = phase
    if iteration is not None:
        st["iteration"] = iteration
        st["lastResult"] = (
            {"training_iteration": iteration, "time_total_s": 1.5, "loss": 0.25, "acc": 0.9}
            if result is None
            else result
        )
    if checkpoint is not None:
        st["latestCheckpoint"] = {
            "path": f"s3://bucket/runs/team/{name}/checkpoint_{checkpoint:06d}",
            "iteration": checkpoint,
            "time": stamp(5),
        }
    st.update(status)
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TrainableJob",
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": "u-1",
            "resourceVersion": rv,
            "creationTimestamp": stamp(200),
            "labels": {"team": "vision"},
        },
        "spec": spec,
        "status": st,
    }


def cond(ctype: str, status: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": ctype, "status": status, "reason": reason, "message": message}


SUCCEEDED = job(
    phase="Succeeded",
    iteration=30,
    checkpoint=30,
    conditions=[
        cond("Complete", "True", "Succeeded", "the trainable reached its stop criterion"),
        cond("Finished", "True", "Succeeded", "the trainable reached its stop criterion"),
    ],
)
FAILED = job(
    phase="Failed",
    conditions=[
        cond("Failed", "True", "MaxFailuresExceeded", "crash on purpose\n at iteration 12"),
    ],
)


# arguments


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["sleep=0.1"], {"sleep": 0.1}),
        (["n=3", "opt=adam", "flag=true"], {"n": 3, "opt": "adam", "flag": True}),
        (["layers=[64, 32]", "path=/data/x"], {"layers": [64, 32], "path": "/data/x"}),
        (['{"lr": 0.01, "a": "b=c"}'], {"lr": 0.01, "a": "b=c"}),
        (['{"lr": 0.01}', "lr=0.5"], {"lr": 0.5}),
        ([" name = x "], {"name": "x"}),
        (["empty="], {"empty": ""}),
        ([], {}),
    ],
    ids=[
        "number",
        "mixed",
        "json-values",
        "json-object",
        "merged-in-order",
        "spaces",
        "empty",
        "none",
    ],
)
def test_config_args(items: list[str], expected: dict[str, Any]) -> None:
    assert parse_config_args(items) == expected


def test_config_from_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"lr": 0.1, "layers": 3}')
    assert parse_config_args([f"@{path}", "layers=4"]) == {"lr": 0.1, "layers": 4}


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["[1, 2]"], "must be a JSON object"),
        (["nope"], "not valid JSON"),
        (["=3"], "needs a key"),
        (["@/does/not/exist.json"], "cannot read it"),
    ],
    ids=["not-an-object", "bare-word", "no-key", "missing-file"],
)
def test_config_args_refused(items: list[str], message: str) -> None:
    with pytest.raises(InvalidSettings, match=message):
        parse_config_args(items)


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", 1), ("1.5", 1.5), ("null", None), ("adam", "adam"), ('"7"', "7")],
)
def test_parse_value(raw: str, value: Any) -> None:
    assert parse_value(raw) == value


@pytest.mark.parametrize(
    ("gpus", "items", "expected"),
    [
        (None, [], None),
        (2, [], {"nvidia.com/gpu": "2"}),
        (0, [], None),
        (None, ["cpu=4", "memory=16Gi"], {"cpu": "4", "memory": "16Gi"}),
        (1, ["cpu=4", "nvidia.com/gpu=1"], {"cpu": "4", "nvidia.com/gpu": "1"}),
    ],
    ids=["none", "gpus", "zero-gpus", "resources", "both-agree"],
)
def test_resources(gpus: int | None, items: list[str], expected: Any) -> None:
    assert parse_resources(gpus, items) == expected


@pytest.mark.parametrize(
    ("gpus", "items", "message"),
    [(1, ["nvidia.com/gpu=2"], "disagree"), (-1, [], "0 or more"), (None, ["cpu"], "KEY=VALUE")],
    ids=["disagree", "negative", "no-value"],
)
def test_resources_refused(gpus: int | None, items: list[str], message: str) -> None:
    with pytest.raises(InvalidSettings, match=message):
        parse_resources(gpus, items)


def test_pairs_and_trainable() -> None:
    assert parse_pairs(["a=1", "b = x", "a=2"], "--label", "k=v") == {"a": "2", "b": "x"}
    with pytest.raises(InvalidSettings, match="--label 'a' must be KEY=VALUE"):
        parse_pairs(["a"], "--label", "k=v")
    assert check_trainable("tests.e2e.trainables:Counter") == "tests.e2e.trainables:Counter"
    for bad in ("Counter", "tests/e2e/trainables.py:Counter", "a:", ":B"):
        with pytest.raises(InvalidSettings, match="MODULE:ATTR"):
            check_trainable(bad)


class FakeJob:
    def __init__(self, name: str, namespace: str, body: dict[str, Any]) -> None:
        self.name, self.namespace, self.kube, self.body = name, namespace, None, body

    def get(self) -> dict[str, Any]:
        return self.body


def test_submit_maps_flags_to_the_client(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[Any, dict[str, Any]]] = []

    def fake_submit(trainable: Any, **kwargs: Any) -> FakeJob:
        calls.append((trainable, kwargs))
        return FakeJob(kwargs["name"] or "counter-x", "team", job())

    monkeypatch.setattr("kubetune.client.submit", fake_submit)
    argv = [
        "submit", "tests.e2e.trainables:Counter", "--storage", "s3://b/p", "-n", "team",
        "--config", "sleep=0.1", "opt=adam", "--config", '{"layers": [1, 2]}',
        "--stop", "training_iteration=30", "--stop", "loss=0.5",
        "--checkpoint-frequency", "10", "--checkpoint-at-end", "--num-to-keep", "2",
        "--score-attribute", "score", "--score-order", "min",
        "--gpus", "1", "--resources", "cpu=2", "--image", "img:1",
        "--endpoint-url", "http://s3:9000", "--storage-secret", "creds",
        "--label", "team=vision", "--max-failures", "5",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    trainable, kw = calls[0]
    assert trainable == "tests.e2e.trainables:Counter"
    assert kw["config"] == {"sleep": 0.1, "opt": "adam", "layers": [1, 2]}
    assert kw["stop"] == {"training_iteration": 30, "loss": 0.5}
    assert kw["checkpoint"] == {
        "frequency": 10, "atEnd": True, "numToKeep": 2, "scoreAttribute": "score",
        "scoreOrder": "min",
    }  # fmt: skip
    assert kw["resources"] == {"cpu": "2", "nvidia.com/gpu": "1"}
    assert kw["labels"] == {"team": "vision"}
    assert (kw["namespace"], kw["storage"], kw["image"]) == ("team", "s3://b/p", "img:1")
    assert (kw["endpoint_url"], kw["storage_secret"]) == ("http://s3:9000", "creds")
    assert kw["max_failures"] == 5 and kw["ship"] is False and kw["suspend"] is False
    assert capsys.readouterr().out == "trainablejob.kubetune.io/counter-x created\n"

    calls.clear()
    assert cli.main(["submit", "m:A", "--storage", "s3://b/p", "--name", "a", "-o", "json"]) == 0
    _, kw = calls[0]
    assert kw["config"] is None and kw["stop"] is None and kw["checkpoint"] is None
    assert kw["resources"] is None and kw["labels"] is None
    assert json.loads(capsys.readouterr().out)["metadata"]["name"] == "mnist"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["submit", "m:A"], "required: --storage"),
        (["submit", "m:A", "--storage", "s3://b/p", "--stop", "x"], "must be KEY=VALUE"),
        (["submit", "m:A", "--storage", "s3://b/p", "--config", "oops"], "not valid JSON"),
        (["submit", "file.py", "--storage", "s3://b/p"], "is not MODULE:ATTR"),
        (["submit", "m:A", "--storage", "s3://b", "--score-order", "min"], "needs --score-attr"),
        (["get", "-o", "table"], "invalid choice"),
        (["get", "--watch"], "give its NAME"),
    ],
    ids=["no-storage", "bad-stop", "bad-config", "a-file", "order-alone", "bad-output", "watch"],
)
def test_bad_arguments_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


# rendering


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (119, "119s"),
        (125, "2m5s"),
        (300, "5m"),
        (3000, "50m"),
        (14460, "4h1m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 7200, "3d2h"),
        (100 * 86400, "100d"),
        (800 * 86400, "2y"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_age_of_missing_or_bad_time() -> None:
    assert age(None, NOW) == "<unknown>"
    assert age("yesterday", NOW) == "<unknown>"
    assert age(stamp(42), NOW) == "42s"


def test_get_table() -> None:
    fresh = job("fresh", phase=None, iteration=None, checkpoint=None)
    text = render_jobs([job(), SUCCEEDED, fresh], NOW)
    assert text.splitlines() == [
        "NAME    PHASE       ITERATION   CHECKPOINT   AGE",
        "mnist   Running     12          10           3m20s",
        "mnist   Succeeded   30          30           3m20s",
        "fresh   Pending     <none>      <none>       3m20s",
    ]


def test_get_table_wide_and_all_namespaces() -> None:
    scored = job(score="acc", attempt=2, failures=1, preemptions=3, workerPod="mnist-worker-2")
    lines = render_jobs([scored, job("plain")], NOW, wide=True, all_namespaces=True).splitlines()
    assert lines[0].split() == [
        "NAMESPACE", "NAME", "PHASE", "ITERATION", "CHECKPOINT", "AGE",
        "ATTEMPT", "FAILURES", "PREEMPTIONS", "WORKER", "POD", "METRIC",
    ]  # fmt: skip
    assert lines[1].split() == [
        "team", "mnist", "Running", "12", "10", "3m20s", "2", "1", "3", "mnist-worker-2", "acc=0.9"
    ]  # fmt: skip
    assert lines[2].split()[-5:] == ["<none>", "0", "0", "<none>", "<none>"]


def test_describe() -> None:
    body = job(
        score="acc",
        attempt=2,
        failures=1,
        workerPod="mnist-worker-2",
        startTime=stamp(100),
        conditions=[
            cond("Running", "True", "Running", "the worker is training"),
            cond("Checkpointed", "True", "CheckpointCommitted", "checkpoint 10"),
        ],
        bestCheckpoint={"path": "s3://bucket/runs/team/mnist/checkpoint_000010", "iteration": 10},
        checkpoints=[{"iteration": 5}, {"iteration": 10}],
    )
    events = [
        {
            "type": "Normal", "reason": "Restarting", "message": "worker exited 1",
            "lastTimestamp": stamp(30), "firstTimestamp": stamp(90), "count": 2,
            "source": {"component": "kubetune-operator"},
        },
        {
            "type": "Normal", "reason": "Created", "message": "pod mnist-worker-1",
            "lastTimestamp": stamp(150), "source": {"component": "kubetune-operator"},
        },
    ]  # fmt: skip
    text = render_describe(body, events, NOW)
    lines = text.splitlines()
    assert lines[0].split() == ["Name:", "mnist"]
    for fact in [
        "Trainable:     examples.mnist:MNIST",
        'Config:        {"lr": 0.01}',
        "Stop:          training_iteration >= 30",
        "Checkpoint:    every 10 iterations, at end, best by max(acc)",
        "Storage:       s3://bucket/runs/team/mnist",
        "Secret:        s3-credentials",
        "Max Failures:  3 (default)",
        "  Phase:          Running",
        "  Attempt:        2",
        "  Worker Pod:     mnist-worker-2",
        "  Latest:  iteration 10  s3://bucket/runs/team/mnist/checkpoint_000010",
        "  Kept:    5, 10",
        "  loss:                0.25",
    ]:
        assert any(" ".join(line.split()).startswith(" ".join(fact.split())) for line in lines), (
            fact,
            text,
        )
    conditions = lines.index("Conditions:")
    assert lines[conditions + 1].split() == ["TYPE", "STATUS", "REASON", "MESSAGE"]
    assert lines[conditions + 3].split()[:3] == ["Checkpointed", "True", "CheckpointCommitted"]
    events_at = lines.index("Events:")
    assert lines[events_at + 2].split()[:3] == ["Normal", "Created", "2m30s"]  # oldest first
    assert lines[events_at + 3].split()[:5] == ["Normal", "Restarting", "30s", "(x2", "over"]


def test_describe_of_a_new_job_and_events_refused() -> None:
    body = job(phase=None, iteration=None, checkpoint=None, stop={})
    text = render_describe(body, None, NOW, events_error="403 Forbidden")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    for fact in ("Conditions: <none>", "Last Result: <none>", "Phase: Pending", "Stop: <none>"):
        assert fact in lines
    assert text.splitlines()[-1] == "Events:  <cannot list them: 403 Forbidden>"


@pytest.mark.parametrize(
    ("body", "bar", "line"),
    [
        (job(), 10, "mnist  [####------]  12/30   40%  Running  loss=0.25  ckpt 10"),
        (job(), None, "mnist  iter 12/30  Running  loss=0.25  ckpt 10"),
        (job(stop={}), 10, "mnist  iter 12  Running  loss=0.25  ckpt 10"),
        (job(score="acc"), 10, "mnist  [####------]  12/30   40%  Running  acc=0.9  ckpt 10"),
        (
            job(phase=None, iteration=None, checkpoint=None),
            10,
            "mnist  [----------]  0/30    0%  Pending  no ckpt",
        ),
        (
            job(iteration=45, attempt=3, phase="Restarting"),
            10,
            "mnist  [##########]  45/30  100%  Restarting  loss=0.25  ckpt 10  attempt 3",
        ),
        (
            job(result={"training_iteration": 12, "flag": True, "gpu": "0", "n": 3}),
            None,
            "mnist  iter 12/30  Running  n=3  ckpt 10",
        ),
        (
            job(stop={"training_iteration": 30, "acc": 0.95, "missing": 1}),
            None,
            "mnist  iter 12/30  Running  acc=0.9  ckpt 10",
        ),
    ],
    ids=[
        "bar",
        "plain",
        "no-target",
        "score-attribute",
        "new",
        "past-target",
        "first-numeric",
        "stop-criterion",
    ],
)
def test_progress_line(body: dict[str, Any], bar: int | None, line: str) -> None:
    assert progress_line(body, bar_width=bar) == line


def test_metric_of_score_attribute_not_reported_yet() -> None:
    assert metric_of(job(score="val_acc")) is None


def test_outcome() -> None:
    assert outcome(SUCCEEDED) == (
        0,
        "Succeeded: the trainable reached its stop criterion (iteration 30, latest checkpoint 30)",
    )
    assert outcome(FAILED) == (1, "Failed: MaxFailuresExceeded: crash on purpose at iteration 12")


ROWS = [
    {"training_iteration": 1, "loss": 0.5, "acc": 0.25, "time_total_s": 0.1, "config": {"a": 1}},
    {"training_iteration": 2, "loss": 0.25, "time_total_s": 0.2, "note": "x", "done": True},
]


class FakeFrame:
    """What pandas.DataFrame(rows).to_dict("records") gives: NaN in missing cells."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        self.records = [{k: r.get(k, math.nan) for k in keys} for r in rows]

    def to_dict(self, orient: str) -> list[dict[str, Any]]:
        assert orient == "records"
        return self.records


def test_results_rows_from_a_list_or_a_frame() -> None:
    assert result_rows(ROWS) == ROWS
    assert result_rows(FakeFrame(ROWS)) == ROWS


def test_results_renderings() -> None:
    assert render_results_table(ROWS).splitlines() == [
        "TRAINING_ITERATION   LOSS   ACC    TIME_TOTAL_S",
        "1                    0.5    0.25   0.1",
        "2                    0.25          0.2",
    ]
    assert [json.loads(line) for line in render_results_json(ROWS).splitlines()] == ROWS
    assert render_results_csv(ROWS).splitlines() == [
        "training_iteration,loss,acc,time_total_s,config,note,done",
        '1,0.5,0.25,0.1,"{""a"": 1}",,',
        "2,0.25,,0.2,,x,True",
    ]


# the watcher


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def updates() -> list[dict[str, Any]]:
    return [
        job(phase="Pending", iteration=None, checkpoint=None),
        job(phase="Running", iteration=None, checkpoint=None),
        job(iteration=5, checkpoint=None),
        job(iteration=5, checkpoint=None),  # an update that changes nothing shown
        job(iteration=12, checkpoint=10),
        job(iteration=30, checkpoint=30),
        SUCCEEDED,
    ]


def test_watcher_on_a_terminal_redraws_one_line() -> None:
    out = FakeTTY()
    assert Watcher(out, live=True, width=200).follow(updates()) == 0
    text = out.getvalue()
    *states, last = text.split(CLEAR_LINE)[1:]
    assert "\n" not in "".join(states)  # every state redrawn on the same line
    assert [s.split()[2] for s in states] == ["0/30", "0/30", "5/30", "12/30", "30/30"]
    assert states[2].startswith("mnist  [####--------------------]  5/30   16%  Running")
    final_line, outcome_line, end = last.split("\n")
    assert final_line.split()[4] == "Succeeded" and end == ""
    assert outcome_line.startswith("Succeeded: the trainable reached its stop criterion")


def test_watcher_cuts_the_line_to_the_terminal() -> None:
    out = FakeTTY()
    Watcher(out, live=True, width=30).update(job())
    assert out.getvalue() == CLEAR_LINE + "mnist  [#########-------------"[:29]


def test_watcher_through_a_pipe_prints_plain_lines() -> None:
    out = io.StringIO()
    assert Watcher(out, live=False).follow([*updates()[:-1], FAILED]) == 1
    assert out.getvalue().splitlines() == [
        "mnist  iter 0/30  Pending  no ckpt",
        "mnist  iter 0/30  Running  no ckpt",
        "mnist  iter 5/30  Running  loss=0.25  no ckpt",
        "mnist  iter 12/30  Running  loss=0.25  ckpt 10",
        "mnist  iter 30/30  Running  loss=0.25  ckpt 30",
        "mnist  iter 12/30  Failed  loss=0.25  ckpt 10",
        "Failed: MaxFailuresExceeded: crash on purpose at iteration 12",
    ]
    assert "\r" not in out.getvalue()


class FakeKube:
    """The client's Kube as the commands use it: scripted watches and gets."""

    namespace = "team"

    def __init__(
        self, jobs: list[dict[str, Any]] | None = None, watches: list[list[Any]] | None = None
    ) -> None:
        self.jobs = {j["metadata"]["name"]: j for j in jobs or []}
        self.watches = list(watches or [])
        self.calls: list[tuple[Any, ...]] = []
        self.api = None

    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls.append(("get", namespace, name))
        if name not in self.jobs:
            raise kube_module.NotFound(f"TrainableJob {namespace}/{name}: not found")
        return self.jobs[name]

    def list_jobs(self, namespace: str) -> list[dict[str, Any]]:
        self.calls.append(("list", namespace))
        return list(self.jobs.values())

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", namespace, name, patch))
        return self.jobs[name]

    def watch_job(
        self, namespace: str, name: str, rv: str, timeout_s: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        self.calls.append(("watch", rv))
        for event in self.watches.pop(0):
            if isinstance(event, Exception):
                raise event
            yield event


def test_updates_renew_the_watch_until_the_job_ends() -> None:
    first = job(rv="1")
    kube = FakeKube(
        jobs=[job(iteration=20, rv="7")],
        watches=[
            [("MODIFIED", job(iteration=13, rv="2")), ("BOOKMARK", {})],  # the server ends it
            [ProtocolError("Connection broken")],  # dropped: read afresh
            [("MODIFIED", job(iteration=21, rv="8")), ("MODIFIED", SUCCEEDED)],
        ],
    )
    seen = [(b["status"].get("iteration"), b["status"]["phase"]) for b in
            job_updates(kube, "team", "mnist", first)]  # fmt: skip
    assert seen == [
        (12, "Running"), (13, "Running"), (20, "Running"), (20, "Running"), (21, "Running"),
        (30, "Succeeded"),
    ]  # fmt: skip
    watched = [c[1] for c in kube.calls if c[0] == "watch"]
    assert watched == ["1", "7", "7"]  # each renewal from the version just read


def test_updates_stop_when_the_job_is_deleted() -> None:
    kube = FakeKube(watches=[[("DELETED", job())]])
    with pytest.raises(JobDeleted):
        list(job_updates(kube, "team", "mnist", job()))


def test_updates_of_a_finished_job_end_at_once() -> None:
    kube = FakeKube()
    assert list(job_updates(kube, "team", "mnist", SUCCEEDED)) == [SUCCEEDED]
    assert kube.calls == []


# the commands against a fake Kube


@pytest.fixture
def fake_kube(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    done = {**SUCCEEDED, "metadata": {**SUCCEEDED["metadata"], "name": "done"}}
    kube = FakeKube(jobs=[job(), job("other", phase="Suspended"), done])
    monkeypatch.setattr(kube_module.Kube, "connect", classmethod(lambda cls, *a: kube))
    return kube


def test_get_not_found_is_kubectls_line(
    fake_kube: FakeKube, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["get", "nope"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        'Error from server (NotFound): trainablejobs.kubetune.io "nope" not found\n'
    )
    for command in (["describe", "nope"], ["logs", "nope"], ["suspend", "nope"]):
        assert cli.main(command) == 1
        assert "NotFound" in capsys.readouterr().err


def test_get_outputs(fake_kube: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["get", "-n", "team"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["NAME", "PHASE"], ["mnist", "Running"], ["other", "Suspended"], ["done", "Succeeded"]
    ]  # fmt: skip
    assert ("list", "team") in fake_kube.calls
    assert cli.main(["get", "-o", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["kind"] == "List" and len(listed["items"]) == 3
    assert cli.main(["get", "mnist", "-o", "name"]) == 0
    assert capsys.readouterr().out == "trainablejob.kubetune.io/mnist\n"
    assert cli.main(["get", "mnist", "-o", "yaml"]) == 0
    assert "phase: Running" in capsys.readouterr().out
    fake_kube.jobs.clear()
    assert cli.main(["get"]) == 0
    assert capsys.readouterr().err == "No resources found in team namespace.\n"


def test_get_watch_follows_to_the_outcome(
    fake_kube: FakeKube, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_kube.watches = [[("MODIFIED", job(iteration=20)), ("MODIFIED", FAILED)]]
    assert cli.main(["get", "mnist", "-w"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("Failed: MaxFailuresExceeded") and len(out) == 4


def test_suspend_and_resume(fake_kube: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["suspend", "mnist"]) == 0
    assert capsys.readouterr().out == "trainablejob.kubetune.io/mnist suspended\n"
    assert cli.main(["resume", "other", "-n", "x"]) == 0
    assert capsys.readouterr().out == "trainablejob.kubetune.io/other resumed\n"
    patches = [c[2:] for c in fake_kube.calls if c[0] == "patch"]
    assert patches == [
        ("mnist", {"spec": {"suspend": True}}),
        ("other", {"spec": {"suspend": False}}),
    ]
    assert cli.main(["suspend", "done"]) == 1
    assert capsys.readouterr().err == (
        "error: trainablejob.kubetune.io/done has already Succeeded: it cannot be suspended\n"
    )


def test_suspend_wait(fake_kube: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    suspended = job(phase="Suspended", checkpoint=12, rv="9")
    # Job.wait starts a new watch after each change it sees.
    fake_kube.watches = [[("MODIFIED", job(phase="Suspending"))], [("MODIFIED", suspended)]]
    assert cli.main(["suspend", "mnist", "--wait"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "trainablejob.kubetune.io/mnist suspended",
        "trainablejob.kubetune.io/mnist Suspended (latest checkpoint: iteration 12)",
    ]


def test_results_command(
    fake_kube: FakeKube, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("kubetune.client.job.Job.results", lambda self: FakeFrame(ROWS))
    assert cli.main(["results", "mnist", "-o", "json"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == ROWS
    monkeypatch.setattr("kubetune.client.job.Job.results", lambda self: [])
    assert cli.main(["results", "mnist"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "has no results yet" in captured.err


def test_cluster_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(*_: Any) -> Any:
        raise kube_module.ClusterError("TrainableJobs in team: forbidden: User cannot list")

    monkeypatch.setattr(kube_module.Kube, "connect", classmethod(lambda cls, *a: FakeKube()))
    monkeypatch.setattr(FakeKube, "list_jobs", refuse)
    assert cli.main(["get"]) == 1
    assert capsys.readouterr().err == (
        "error: TrainableJobs in team: forbidden: User cannot list\n"
    )


def test_unreachable_cluster_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
                "users": [{"name": "u", "user": {"token": "t"}}],
            }
        )
    )
    assert cli.main(["get", "x", "--kubeconfig", str(kubeconfig)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the API server at 127.0.0.1:9 cannot be reached: ")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_describe_orders_events_of_one_second_as_stored() -> None:
    def event(reason: str, rv: str) -> dict[str, Any]:
        return {"type": "Normal", "reason": reason, "lastTimestamp": stamp(5),
                "metadata": {"resourceVersion": rv}}  # fmt: skip

    text = render_describe(job(), [event("Succeeded", "12"), event("Committed", "9")], NOW)
    reasons = [line.split()[1] for line in text.splitlines()[-2:]]
    assert reasons == ["Committed", "Succeeded"]
