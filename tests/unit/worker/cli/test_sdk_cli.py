"""`kubetune run` and `kubetune-worker` as processes: exit codes, the one-line
messages, SIGTERM (save, exit 75, restorable), a second signal, --restore-from."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import kubetune_contract as contract

FIXTURES = textwrap.dedent(
    """
    import json, os, time
    import kubetune as tune

    class Slow(tune.Trainable):
        def setup(self, config):
            self.x = 0
            self.sleep = config.get("sleep", 0.05)
            self.save_sleep = config.get("save_sleep", 0)
        def step(self):
            time.sleep(self.sleep)
            self.x += 1
            return {"x": self.x, "loss": 1.0 / self.x}
        def save_checkpoint(self, d):
            with open(os.path.join(d, "x.json"), "w") as f:
                json.dump({"x": self.x}, f)
            time.sleep(self.save_sleep)
        def load_checkpoint(self, d):
            with open(os.path.join(d, "x.json")) as f:
                self.x = json.load(f)["x"]

    class ReturnsList(Slow):
        def step(self):
            return [1]

    class CannotLoad(Slow):
        def load_checkpoint(self, d):
            raise ValueError("shape mismatch")

    def fn(config):
        tune.report({"a": 1})

    NOT_A_TRAINABLE = 42
    """
)


@pytest.fixture
def proj(tmp_path):
    (tmp_path / "fixtures_sdk.py").write_text(FIXTURES)
    (tmp_path / "broken_sdk.py").write_text("import numpy_that_is_not_there\n")
    return tmp_path


def env_for(proj: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["KUBETUNE_TERMINATION_MESSAGE_PATH"] = str(proj / "termination-log")
    env.pop("PYTHONPATH", None)
    (proj / "tmp").mkdir(exist_ok=True)
    env["TMPDIR"] = str(proj / "tmp")  # what a killed run leaves stays in the test's folder
    # Credentials that parse, so an unreachable endpoint is what fails.
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        env.setdefault(key, value)
    return env


def kubetune(proj: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kubetune.cli", "run", *args]
    return subprocess.run(
        cmd, cwd=proj, env=env_for(proj), capture_output=True, text=True, timeout=timeout
    )


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def iterations(run: Path) -> list[int]:
    with open(run / contract.RESULT_FILE) as f:
        return [json.loads(line)["training_iteration"] for line in f]


def complete_checkpoints(run: Path) -> list[str]:
    return sorted(
        p.name for p in run.glob("checkpoint_*") if (p / contract.CHECKPOINT_MANIFEST).exists()
    )


def wait_for_results(run: Path, n: int, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = run / contract.RESULT_FILE
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no results in time")


def start(proj: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kubetune.cli", "run", *args],
        cwd=proj,
        env=env_for(proj),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigterm_saves_a_checkpoint_that_restores_and_exits_75(proj):
    run = proj / "run"
    proc = start(proj, "fixtures_sdk:Slow", "--storage", str(run), "--checkpoint-frequency", "100")
    wait_for_results(run, 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == contract.EXIT_STOPPED, err
    assert last_line(err).startswith("StoppedWithCheckpoint: stopped on SIGTERM at iteration")
    assert (proj / "termination-log").read_text().strip() == last_line(err)
    done = iterations(run)
    assert complete_checkpoints(run) == [f"checkpoint_{done[-1]:06d}"]
    assert done == list(range(1, len(done) + 1))
    progress = json.loads((run / contract.PROGRESS_FILE).read_text())
    assert progress["state"] == "stopped" and progress["latest_checkpoint"]["iteration"] == done[-1]
    # Restarting continues right after it, with the model state restored.
    again = kubetune(
        proj,
        "fixtures_sdk:Slow",
        "--storage",
        str(run),
        "--stop",
        f"training_iteration={done[-1] + 2}",
    )
    assert again.returncode == 0, again.stderr
    with open(run / contract.RESULT_FILE) as f:
        rows = [json.loads(line) for line in f]
    assert [r["training_iteration"] for r in rows[-2:]] == [done[-1] + 1, done[-1] + 2]
    assert rows[-1]["x"] == done[-1] + 2


def test_second_signal_exits_at_once_without_a_new_checkpoint(proj):
    run = proj / "run"
    proc = start(
        proj,
        "fixtures_sdk:Slow",
        "--storage",
        str(run),
        "--config",
        '{"save_sleep": 60}',
        "--no-checkpoint-at-end",
    )
    wait_for_results(run, 2, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)  # now inside save_checkpoint, which sleeps a minute
    begun = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - begun < 10
    assert proc.returncode == contract.EXIT_STOP_UNSAVED
    assert last_line(err).startswith("StoppedWithoutCheckpoint: second SIGTERM")
    assert complete_checkpoints(run) == []


def test_restore_from_continues_at_the_next_iteration(proj):
    first = kubetune(
        proj,
        "fixtures_sdk:Slow",
        "--storage",
        "old",
        "--config",
        '{"sleep": 0}',
        "--stop",
        "training_iteration=12",
        "--checkpoint-frequency",
        "5",
    )
    assert first.returncode == 0, first.stderr
    assert complete_checkpoints(proj / "old") == [
        "checkpoint_000005",
        "checkpoint_000010",
        "checkpoint_000012",
    ]
    second = kubetune(
        proj,
        "fixtures_sdk:Slow",
        "--storage",
        "new",
        "--config",
        '{"sleep": 0}',
        "--restore-from",
        str(proj / "old" / "checkpoint_000010"),
        "--stop",
        "training_iteration=14",
    )
    assert second.returncode == 0, second.stderr
    assert iterations(proj / "new") == [11, 12, 13, 14]
    assert "restoring from" in second.stdout


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (
            ["no_such_module:X"],
            contract.EXIT_BAD_TRAINABLE,
            "cannot import module 'no_such_module'",
        ),
        (
            ["broken_sdk:X"],
            contract.EXIT_BAD_TRAINABLE,
            "No module named 'numpy_that_is_not_there'",
        ),
        (["fixtures_sdk:Missing"], contract.EXIT_BAD_TRAINABLE, "has no attribute 'Missing'"),
        (["fixtures_sdk:NOT_A_TRAINABLE"], contract.EXIT_BAD_TRAINABLE, "neither a kubetune"),
        (["fixtures_sdk"], contract.EXIT_BAD_TRAINABLE, "must be MODULE:ATTR"),
        (["fixtures_sdk:ReturnsList"], contract.EXIT_BAD_TRAINABLE, "needs to return a dict"),
        (
            ["fixtures_sdk:Slow", "--restore-from", "/nowhere/checkpoint_000001"],
            contract.EXIT_BAD_CHECKPOINT,
            "does not exist",
        ),
        (["fixtures_sdk:Slow", "--config", "{bad"], contract.EXIT_USAGE, "not valid JSON"),
        (["fixtures_sdk:Slow", "--stop", "loss"], contract.EXIT_USAGE, "must be KEY=VALUE"),
        (["fixtures_sdk:Slow", "--stop", "loss=low"], contract.EXIT_USAGE, "is not a number"),
        (["fixtures_sdk:Slow", "--num-to-keep", "0"], contract.EXIT_USAGE, "num_to_keep"),
        (["fixtures_sdk:Slow", "--bogus"], contract.EXIT_USAGE, "unrecognized arguments"),
        (
            ["fixtures_sdk:Slow", "--storage", "/proc/kubetune-cannot"],
            contract.EXIT_STORAGE,
            "cannot create storage folder",
        ),
        (
            [
                "fixtures_sdk:Slow",
                "--storage",
                "s3://kubetune-test-bucket/x",
                "--endpoint-url",
                "http://127.0.0.1:9",
            ],
            contract.EXIT_STORAGE,
            "cannot reach S3 endpoint http://127.0.0.1:9",
        ),
    ],
    ids=[
        "no-module",
        "import-error",
        "no-attr",
        "not-trainable",
        "no-colon",
        "non-dict",
        "no-checkpoint",
        "bad-json",
        "bad-stop",
        "stop-nan",
        "keep-zero",
        "bad-flag",
        "storage-local",
        "storage-s3",
    ],
)
def test_bad_input_gives_its_code_and_one_line(proj, args, code, needle):
    done = kubetune(proj, *args, "--stop", "training_iteration=3", timeout=120)
    assert done.returncode == code, done.stderr
    assert needle in last_line(done.stderr)
    assert last_line(done.stderr).startswith(contract.EXIT_REASONS[code] + ": ")
    assert "Traceback" not in done.stderr
    assert (proj / "termination-log").read_text().strip() == last_line(done.stderr)


def test_a_checkpoint_that_fails_to_load(proj):
    kubetune(proj, "fixtures_sdk:Slow", "--storage", "old", "--stop", "training_iteration=1")
    done = kubetune(
        proj,
        "fixtures_sdk:CannotLoad",
        "--storage",
        "new",
        "--restore-from",
        str(proj / "old" / "checkpoint_000001"),
    )
    assert done.returncode == contract.EXIT_BAD_CHECKPOINT
    assert "fails to load: ValueError: shape mismatch" in last_line(done.stderr)


def test_a_misspelt_stop_key_ends_the_run_at_once(proj):
    done = kubetune(proj, "fixtures_sdk:Slow", "--storage", "r", "--stop", "training_iterations=3")
    assert done.returncode == contract.EXIT_USAGE
    line = last_line(done.stderr)
    assert "stop criterion 'training_iterations' is not in the first result" in line
    assert "did you mean 'training_iteration'?" in line


def test_function_and_storage_default(proj):
    done = kubetune(proj, "fixtures_sdk:fn")
    assert done.returncode == 0, done.stderr
    assert iterations(proj / "kubetune_results" / "fn") == [1]


def test_worker_entry_point(proj):
    spec = contract.WorkerSpec(
        trainable="fixtures_sdk:Slow",
        run_uri=str(proj / "ns" / "job"),
        run_id="uid-1",
        config={"sleep": 0},
        stop={"training_iteration": 3},
        checkpoint={"frequency": 2},
    )

    def worker(spec_env: str) -> subprocess.CompletedProcess[str]:
        env = env_for(proj) | {contract.WORKER_SPEC_ENV: spec_env}
        return subprocess.run(
            [sys.executable, "-m", "kubetune.worker"],
            cwd=proj,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = worker(spec.to_env())
    assert done.returncode == 0, done.stderr
    assert complete_checkpoints(proj / "ns" / "job") == ["checkpoint_000002", "checkpoint_000003"]
    doc = json.loads((proj / "ns" / "job" / contract.PROGRESS_FILE).read_text())
    assert doc["run_id"] == "uid-1" and doc["state"] == "completed"
    spec.run_id = "uid-2"
    clash = worker(spec.to_env())
    assert clash.returncode == contract.EXIT_RUN_CONFLICT
    assert last_line(clash.stderr).startswith("RunFolderConflict: ")
    bad = worker('{"trainable": "x"}')
    assert bad.returncode == contract.EXIT_USAGE and "WorkerSpec" in last_line(bad.stderr)


def test_live_line_on_a_terminal(proj):
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubetune.cli",
            "run",
            "fixtures_sdk:Slow",
            "--storage",
            "r",
            "--stop",
            "training_iteration=8",
            "--checkpoint-frequency",
            "4",
        ],
        cwd=proj,
        env=env_for(proj),
        stdout=follower,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    os.close(leader)
    screen = b"".join(chunks).decode()
    assert proc.returncode == 0
    assert "\r\x1b[2Kiter " in screen and "x=" in screen
    assert "checkpoint " in screen and "ckpt 4" in screen


REPO = Path(__file__).resolve().parents[4]


def test_the_examples_run_from_the_repository_root(tmp_path):
    env = env_for(tmp_path)
    base = [sys.executable, "-m", "kubetune.cli", "run"]
    done = subprocess.run(
        [
            *base,
            "examples.ray_class_trainable:MyTrainable",
            "--storage",
            str(tmp_path / "c"),
            "--config",
            '{"step_seconds": 0}',
            "--stop",
            "training_iteration=6",
            "--checkpoint-frequency",
            "5",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert complete_checkpoints(tmp_path / "c") == ["checkpoint_000005", "checkpoint_000006"]
    # The function example saves when asked to stop, so SIGTERM loses nothing.
    proc = subprocess.Popen(
        [*base, "examples.ray_function_trainable:train_func", "--storage", str(tmp_path / "f")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_results(tmp_path / "f", 7, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == contract.EXIT_STOPPED, err
    stopped_at = iterations(tmp_path / "f")[-1]
    assert complete_checkpoints(tmp_path / "f")[-1] == f"checkpoint_{stopped_at:06d}"
