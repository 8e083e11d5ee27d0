"""The Python client on the real local cluster: a Trainable defined in a
script's `__main__` is shipped by value and runs in a worker that lacks its
code; results and the best checkpoint come back; shipped code is never
unpickled unless its digest, Python version and folder are right; logs are
followed across worker pods."""

# mypy: disable-error-code="arg-type,union-attr,index"

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from operator_fixtures import (
    BUCKET,
    STATE,
    apply,
    cluster_env,
    condition,
    get_job,
    job_manifest,
    kubectl,
    read_results,
    wait_for,
)

import kubetune
from kubetune.client import Job, JobFailed, Kube

pytestmark = pytest.mark.e2e

SCRIPT = '''
import json, os, sys
import kubetune as tune


class NotebookTrainable(tune.Trainable):
    """Defined in __main__: no worker image can import it."""

    def setup(self, config):
        self.value = config["start"]

    def step(self):
        self.value += 1.5
        return {"value": self.value}

    def save_checkpoint(self, checkpoint_dir):
        return {"value": self.value}

    def load_checkpoint(self, state):
        self.value = state["value"]


job = tune.submit(
    NotebookTrainable,
    name=sys.argv[1],
    namespace=sys.argv[2],
    config={"start": 10.0},
    stop={"training_iteration": 12},
    checkpoint=tune.CheckpointConfig(
        checkpoint_frequency=4, checkpoint_score_attribute="value", checkpoint_score_order="max"
    ),
    storage=sys.argv[3],
    endpoint_url=os.environ["AWS_ENDPOINT_URL"],
    storage_secret="s3-credentials",
)
status = job.wait()
rows = job.results()
rows = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
best = job.best_checkpoint
restored = NotebookTrainable(config={"start": 0.0})
restored.restore(best)
print(json.dumps({
    "phase": status["phase"],
    "spec": job.get()["spec"],
    "rows": [[r["training_iteration"], r["value"]] for r in rows],
    "best": best.path,
    "restored": [restored.iteration, restored.value],
}))
'''


def handle(name: str, namespace: str) -> Job:
    kube = Kube.connect(str(STATE / "kubeconfig"))
    return Job(name, namespace, kube=kube, endpoint_url=cluster_env()["AWS_ENDPOINT_URL"])


def s3_env() -> dict[str, str]:
    env = cluster_env()
    return {
        **os.environ,
        "KUBECONFIG": str(STATE / "kubeconfig"),
        **{k: env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        "AWS_DEFAULT_REGION": env.get("AWS_DEFAULT_REGION", "us-east-1"),
    }


def test_class_from_main_is_shipped_runs_and_comes_back(
    job_ns: str, s3: Any, tmp_path: Path
) -> None:
    script = tmp_path / "notebook.py"
    script.write_text(textwrap.dedent(SCRIPT))
    storage = f"s3://{BUCKET}/client-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(
        [sys.executable, str(script), "shipped", job_ns, storage],
        cwd=tmp_path,  # the worker's working dir (the repository) has no such module
        env=s3_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["phase"] == "Succeeded"
    assert "trainable" not in out["spec"] and out["spec"]["code"]["python"] == "3.11"
    assert out["spec"]["code"]["uri"].startswith(f"{storage}/{job_ns}/shipped/.kubetune/code/")
    stored = read_results(s3, f"{storage}/{job_ns}/shipped")
    assert out["rows"] == [[r["training_iteration"], r["value"]] for r in stored]
    assert [r[0] for r in out["rows"]] == list(range(1, 13))
    assert out["best"].endswith("checkpoint_000012")
    assert out["restored"] == [12, 10.0 + 12 * 1.5]


class _Marker:
    """Unpickling this creates a file: proof of whether anything was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def _payload(marker: Path) -> bytes:
    tripwire = _Marker(marker)

    def trainable(config: dict[str, Any]) -> None:  # would run only after unpickling
        kubetune.report({"seen": str(tripwire)})

    return bytes(cloudpickle.dumps(trainable))


def _put(s3: Any, uri: str, data: bytes) -> None:
    bucket, _, key = uri[len("s3://") :].partition("/")
    s3.put_object(Bucket=bucket, Key=key, Body=data)


def _code_job(name: str, storage: str, namespace: str, data: bytes, **code: str) -> dict[str, Any]:
    import kubetune_contract as contract
    from kubetune.runtime import shipping

    sha = shipping.digest(data)
    run_uri = f"{storage}/{namespace}/{name}"
    manifest = job_manifest(name, stop={"training_iteration": 2})
    del manifest["spec"]["trainable"]
    manifest["spec"]["storage"]["uri"] = storage
    manifest["spec"]["code"] = {
        "uri": contract.code_uri(run_uri, sha),
        "sha256": sha,
        "python": shipping.python_version(),
        **code,
    }
    return manifest


def test_shipped_code_is_never_unpickled_unless_digest_version_and_folder_are_right(
    job_ns: str, s3: Any, tmp_path: Path
) -> None:
    storage = f"s3://{BUCKET}/tamper-{uuid.uuid4().hex[:8]}"
    # The control: these bytes, unpickled, do create their marker.
    control = tmp_path / "control"
    cloudpickle.loads(_payload(control))
    assert control.exists()

    marker = tmp_path / "unpickled"
    data = _payload(marker)
    tampered = _code_job("tampered", storage, job_ns, data)
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0x01
    _put(s3, tampered["spec"]["code"]["uri"], bytes(changed))
    apply(job_ns, tampered)

    other_python = _code_job("other-python", storage, job_ns, data, python="3.10")
    _put(s3, other_python["spec"]["code"]["uri"], data)
    apply(job_ns, other_python)

    elsewhere = _code_job("elsewhere", storage, job_ns, data)
    real = elsewhere["spec"]["code"]["uri"]
    outside = real.replace(f"/{job_ns}/elsewhere/", f"/{job_ns}/someone-else/")
    _put(s3, outside, data)
    elsewhere["spec"]["code"]["uri"] = outside
    apply(job_ns, elsewhere)

    sha = tampered["spec"]["code"]["sha256"]
    for name, words in (
        ("tampered", sha),
        ("other-python", "3.10"),
        ("elsewhere", "outside"),
    ):
        job = wait_for(job_ns, name, lambda j: condition(j, "Failed").get("status") == "True")
        failed = condition(job, "Failed")
        assert words in failed["message"], (name, failed)
    assert condition(get_job(job_ns, "elsewhere"), "Failed")["reason"] == "InvalidSpec"
    assert not get_job(job_ns, "elsewhere")["status"].get("workerPod")  # no pod ever
    assert not marker.exists(), "shipped code was unpickled"


def test_logs_follow_across_worker_pods(job_ns: str, s3: Any) -> None:
    manifest = job_manifest(
        "chatty",
        config={"sleep": 0.1, "say": True},
        stop={"training_iteration": 60},
        checkpoint={"frequency": 5},
    )
    apply(job_ns, manifest)
    job = handle("chatty", job_ns)
    lines: list[str] = []
    follower = threading.Thread(target=lambda: lines.extend(job.logs(follow=True)), daemon=True)
    follower.start()
    deadline = time.monotonic() + 60
    while sum("counter step" in line for line in lines) < 15:
        assert time.monotonic() < deadline, lines
        time.sleep(0.1)
    kubectl("-n", job_ns, "delete", "pod", "chatty-worker-1", "--grace-period=0", "--force")
    follower.join(timeout=120)
    assert not follower.is_alive(), "logs(follow=True) did not end with the job"
    assert job.status()["phase"] == "Succeeded"

    banners = [i for i, line in enumerate(lines) if line.startswith("[kubetune] worker for run")]
    assert len(banners) == 2, lines  # one per worker pod, in order
    first, second = lines[: banners[1]], lines[banners[1] :]
    steps = [int(x.split()[-1]) for x in first if x.startswith("counter step")]
    assert steps == list(range(1, len(steps) + 1))  # pod 1: from its start, no gap
    pod2 = kubectl("-n", job_ns, "logs", "chatty-worker-2").stdout.splitlines()
    assert second == pod2  # pod 2: every line once
    resumed = [int(x.split()[-1]) for x in second if x.startswith("counter step")]
    assert resumed == list(range(resumed[0], 61)) and resumed[0] <= steps[-1] + 1


def test_wait_raises_the_jobs_failure_reason(job_ns: str) -> None:
    apply(job_ns, job_manifest("broken", config={"fail_in_setup": True}, maxFailures=0))
    with pytest.raises(JobFailed) as err:
        handle("broken", job_ns).wait(timeout=120)
    assert "dataset path /nope" in str(err.value) and err.value.reason


TUNER_SCRIPT = '''
import json, os, sys
import kubetune as tune          # was: from ray import tune


class Quadratic(tune.Trainable):
    """Defined in __main__: shipped by value to every trial."""

    def setup(self, config):
        self.x = config["x"]
        self.offset = config["offset"]

    def step(self):
        return {"loss": (self.x - 0.3) ** 2 + self.offset + 1 / (self.iteration + 1)}

    def save_checkpoint(self, checkpoint_dir):
        return {"x": self.x}

    def load_checkpoint(self, state):
        self.x = state["x"]


tuner = tune.Tuner(
    Quadratic,
    param_space={"x": tune.uniform(0.0, 1.0), "offset": tune.grid_search([0.0, 1.0])},
    tune_config=tune.TuneConfig(
        metric="loss", mode="min", num_samples=3, max_concurrent_trials=3, seed=5,
        scheduler=tune.schedulers.ASHAScheduler(max_t=8, grace_period=1, reduction_factor=2),
    ),
    run_config=tune.RunConfig(
        name=sys.argv[1], storage_path=sys.argv[2], stop={"training_iteration": 8},
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=2),
    ),
    namespace=sys.argv[3],
    endpoint_url=os.environ["AWS_ENDPOINT_URL"],
    storage_secret="s3-credentials",
)
grid = tuner.fit(timeout=300)
best = grid.get_best_result()
print(json.dumps({
    "n": len(grid),
    "best": {"config": best.config, "loss": best.metrics["loss"], "name": best.name,
             "checkpoint": best.checkpoint.path if best.checkpoint else None},
    "all": [[r.name, r.metrics.get("loss"), r.config] for r in grid],
}))
'''


def test_tuner_runs_a_ray_script_as_a_sweep_with_its_code_shipped(
    job_ns: str, s3: Any, tmp_path: Path, cluster: Any
) -> None:
    script = tmp_path / "tune_script.py"
    script.write_text(textwrap.dedent(TUNER_SCRIPT))
    storage = f"s3://{BUCKET}/tuner-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(
        [sys.executable, str(script), "quad", storage, job_ns],
        cwd=tmp_path,
        env=s3_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n"] == 6  # 3 samples x 2 grid values
    losses = [loss for _, loss, _ in out["all"] if loss is not None]
    assert out["best"]["loss"] == min(losses)
    assert out["best"]["config"]["offset"] == 0.0
    sweep = json.loads(kubectl("-n", job_ns, "get", "tsw", "quad", "-o", "json").stdout)
    assert sweep["status"]["phase"] == "Succeeded"
    template = sweep["spec"]["jobTemplate"]["spec"]
    assert "trainable" not in template and template["code"]["uri"].startswith(
        f"{storage}/{job_ns}/quad/.kubetune/code/"
    )
    trial = json.loads(kubectl("-n", job_ns, "get", "tj", out["best"]["name"], "-o", "json").stdout)
    assert trial["spec"]["code"]["uri"].startswith(f"{storage}/{job_ns}/{out['best']['name']}/")
    assert trial["spec"]["code"]["sha256"] == template["code"]["sha256"]
