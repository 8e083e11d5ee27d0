"""The `kubetune` cluster commands as a user runs them: the real console script
against the local cluster. `submit --watch` on a pseudo-terminal redraws one
progress line that advances and ends with the outcome; piped it prints plain
lines; get, describe, results and logs read the finished job back;
suspend --wait and resume act on a running one; a missing job is kubectl's
NotFound line."""

# mypy: disable-error-code="arg-type,union-attr,index"

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from operator_fixtures import (
    BUCKET,
    REPO,
    SECRET,
    STATE,
    cluster_env,
    get_job,
    kubectl,
    read_results,
    wait_for,
)

pytestmark = pytest.mark.e2e

KUBETUNE = str(Path(sys.executable).parent / "kubetune")
COLUMNS = 160


def cli_env() -> dict[str, str]:
    """KUBECONFIG for the cluster, the S3 keys for `results`, no COLUMNS (the
    terminal's own width is read)."""
    env = cluster_env()
    out = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    out["KUBECONFIG"] = str(STATE / "kubeconfig")
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        out[key] = env[key]
    out["AWS_DEFAULT_REGION"] = env.get("AWS_DEFAULT_REGION", "us-east-1")
    return out


def kubetune(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBETUNE, *args],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def kubetune_in_pty(*args: str, timeout: float = 180) -> tuple[int, bytes]:
    """Runs the command with a pseudo-terminal as stdout and stderr (so
    isatty() is true, as in a shell) and returns its exit code and every byte
    it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, COLUMNS, 0, 0))
    proc = subprocess.Popen(
        [KUBETUNE, *args],
        cwd=REPO,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                raise AssertionError(f"kubetune {' '.join(args)} ran past {timeout}s: {out!r}")
            ready, _, _ = select.select([master], [], [], min(left, 1.0))
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    return proc.wait(timeout=30), out


def submit_args(namespace: str, name: str, *extra: str) -> list[str]:
    return [
        "submit", "tests.e2e.trainables:Counter",
        "--storage", f"s3://{BUCKET}/cli-{uuid.uuid4().hex[:8]}",
        "--endpoint-url", cluster_env()["AWS_ENDPOINT_URL"],
        "--storage-secret", SECRET,
        "-n", namespace, "--name", name,
        *extra,
    ]  # fmt: skip


def test_submit_watch_on_a_terminal_redraws_a_progress_bar(job_ns: str) -> None:
    args = submit_args(
        job_ns, "tty", "--stop", "training_iteration=30", "--checkpoint-frequency", "10",
        "--config", "sleep=0.1", "--watch",
    )  # fmt: skip
    code, out = kubetune_in_pty(*args)
    text = out.decode()
    print(repr(text))  # the captured terminal bytes, for the record
    assert code == 0, text
    assert text.startswith("trainablejob.kubetune.io/tty created\r\n")
    # Each state is drawn over the last: carriage return, erase line, the line.
    states = re.findall(r"\r\x1b\[2K([^\r\n]*)", text)
    done = [int(m.group(1)) for s in states if (m := re.search(r"\] +(\d+)/30 ", s))]
    assert len(states) >= 4 and len(set(done)) >= 3, states
    assert done == sorted(done) and done[-1] == 30, states
    assert all(s.startswith("tty  [") for s in states)
    assert re.search(r"\[#{24}\]  30/30  100%  Succeeded  \S+=\S+  ckpt 30$", states[-1])
    # The live line is ended once; then the outcome.
    tail = text.rsplit("\x1b[2K", 1)[1].split("\r\n")
    assert tail[1].startswith("Succeeded: the trainable reached its stop criterion"), tail
    assert "latest checkpoint 30" in tail[1] and tail[2:] == [""]


def test_submit_watch_piped_then_get_results_logs_describe(job_ns: str, s3: Any) -> None:
    args = submit_args(
        job_ns, "piped", "--stop", "training_iteration=30", "--checkpoint-frequency", "10",
        "--config", "sleep=0.1", "--label", "team=vision", "--score-attribute", "score",
        "--watch",
    )  # fmt: skip
    proc = kubetune(*args, timeout=180)
    print(proc.stdout)  # for the record
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stdout and "\x1b" not in proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0] == "trainablejob.kubetune.io/piped created"
    progress = lines[1:-1]
    assert progress and all(line.startswith("piped  iter ") for line in progress), lines
    assert len(set(progress)) == len(progress)  # one line per change, never a repeat
    assert progress[-1].startswith("piped  iter 30/30  Succeeded  score=30  ckpt 30")
    assert lines[-1].startswith("Succeeded: ")

    got = kubetune("get", "piped", "-n", job_ns, "-o", "json")
    assert got.returncode == 0, got.stderr
    body = json.loads(got.stdout)
    assert body["status"]["phase"] == "Succeeded"
    assert body["spec"]["trainable"] == "tests.e2e.trainables:Counter"
    assert body["spec"]["config"] == {"sleep": 0.1}
    checkpoint = body["spec"]["checkpoint"]  # (the CRD's defaults fill the rest)
    assert (checkpoint["frequency"], checkpoint["scoreAttribute"]) == (10, "score")
    assert body["metadata"]["labels"] == {"team": "vision"}

    table = kubetune("get", "-n", job_ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "ITERATION", "CHECKPOINT", "AGE"]
    assert table[1].split()[:4] == ["piped", "Succeeded", "30", "30"]
    wide = kubetune("get", "piped", "-n", job_ns, "-o", "wide").stdout.splitlines()
    assert wide[1].split()[5:] == ["1", "0", "0", "piped-worker-1", "score=30"], wide

    results = kubetune("results", "piped", "-n", job_ns, "-o", "json")
    assert results.returncode == 0, results.stderr
    rows = [json.loads(line) for line in results.stdout.splitlines()]
    assert [r["training_iteration"] for r in rows] == list(range(1, 31))
    run_uri = f"{body['spec']['storage']['uri']}/{job_ns}/piped"
    assert rows == read_results(s3, run_uri)
    table = kubetune("results", "piped", "-n", job_ns).stdout.splitlines()
    assert table[0].split()[:2] == ["TRAINING_ITERATION", "SCORE"] and len(table) == 31

    logs = kubetune("logs", "piped", "-n", job_ns)
    assert logs.returncode == 0, logs.stderr
    pod_log = kubectl("-n", job_ns, "logs", "piped-worker-1").stdout
    assert logs.stdout == pod_log and "[kubetune] worker for run" in logs.stdout

    described = kubetune("describe", "piped", "-n", job_ns)
    print(described.stdout)
    assert described.returncode == 0, described.stderr
    summary = [" ".join(line.split()) for line in described.stdout.splitlines()]
    for fact in ("Phase: Succeeded", "Iteration: 30", "Stop: training_iteration >= 30"):
        assert fact in summary, described.stdout
    assert any(s.startswith("Latest: iteration 30 s3://") for s in summary)
    assert summary[summary.index("Conditions:") + 1] == "TYPE STATUS REASON MESSAGE"
    assert any(s.startswith("Complete True Succeeded") for s in summary)
    events = summary[summary.index("Events:") + 1 :]  # the operator's events, oldest first
    assert events[0] == "TYPE REASON AGE FROM MESSAGE"
    assert any(e.startswith("Normal Succeeded") and "kubetune-operator" in e for e in events)


def test_suspend_wait_and_resume(job_ns: str, s3: Any) -> None:
    args = submit_args(
        job_ns, "long", "--stop", "training_iteration=150", "--checkpoint-frequency", "10",
        "--config", "sleep=0.05",
    )  # fmt: skip
    created = kubetune(*args)
    assert created.stdout == "trainablejob.kubetune.io/long created\n", created.stderr
    wait_for(job_ns, "long", lambda j: (j.get("status") or {}).get("iteration", 0) >= 5)

    suspended = kubetune("suspend", "long", "-n", job_ns, "--wait", "--timeout", "90")
    assert suspended.returncode == 0, suspended.stderr
    first, second = suspended.stdout.splitlines()
    assert first == "trainablejob.kubetune.io/long suspended"
    at = re.fullmatch(
        r"trainablejob\.kubetune\.io/long Suspended \(latest checkpoint: iteration (\d+)\)", second
    )
    assert at, second
    status = get_job(job_ns, "long")["status"]
    assert status["phase"] == "Suspended"
    assert status["latestCheckpoint"]["iteration"] == int(at.group(1)) >= 5

    resumed = kubetune("resume", "long", "-n", job_ns, "--wait", "--timeout", "90")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0] == "trainablejob.kubetune.io/long resumed"
    assert re.match(
        r"trainablejob\.kubetune\.io/long (Running|Succeeded)", resumed.stdout.splitlines()[1]
    )

    print(suspended.stdout + resumed.stdout)  # for the record
    watched = kubetune("get", "long", "-n", job_ns, "--watch", timeout=180)
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.splitlines()[-1].startswith("Succeeded: ")
    rows = kubetune("results", "long", "-n", job_ns, "-o", "json").stdout.splitlines()
    assert [json.loads(r)["training_iteration"] for r in rows] == list(range(1, 151))
    assert get_job(job_ns, "long")["status"]["attempt"] >= 2  # a second worker pod resumed it

    finished = kubetune("suspend", "long", "-n", job_ns)
    assert finished.returncode == 1
    assert finished.stderr == (
        "error: trainablejob.kubetune.io/long has already Succeeded: it cannot be suspended\n"
    )


def test_a_missing_job_is_kubectls_not_found_line(job_ns: str) -> None:
    for command in ("get", "describe", "logs", "results", "suspend"):
        proc = kubetune(command, "nope", "-n", job_ns)
        assert proc.returncode == 1, (command, proc.stdout)
        assert proc.stderr == (
            'Error from server (NotFound): trainablejobs.kubetune.io "nope" not found\n'
        ), command
        assert proc.stdout == ""
    listed = kubetune("get", "-n", job_ns)
    assert listed.returncode == 0 and listed.stdout == ""
    assert listed.stderr == f"No resources found in {job_ns} namespace.\n"
