"""The loop on S3 (moto in-process): results, checkpoints, resume, restore by URI,
and a training function reading its checkpoint back from the bucket."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import pytest

import kubetune
import kubetune_contract as contract

BUCKET = "kubetune-test"  # the bucket of the conftest's `s3` fixture
RUN = f"s3://{BUCKET}/experiments/default/job-a"
# Temporary folders the SDK makes land in each test's tmp_path.
pytestmark = pytest.mark.usefixtures("own_tmp")


def read(client: Any, key: str) -> bytes:
    return bytes(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def keys(client: Any, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


class Model(kubetune.Trainable):
    def setup(self, config):
        self.value = 0

    def step(self):
        self.value += 1
        return {"value": self.value}

    def save_checkpoint(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "v.json"), "w") as f:
            json.dump({"value": self.value}, f)

    def load_checkpoint(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "v.json")) as f:
            self.value = json.load(f)["value"]


def go(trainable: Any = Model, storage: str = RUN, **kw: Any) -> kubetune.RunResult:
    return kubetune.run(trainable, storage=storage, verbose=0, raise_on_failure=False, **kw)


def test_results_checkpoints_and_resume_on_s3(s3):
    out = go(stop={"training_iteration": 6}, checkpoint={"frequency": 3}, run_id="uid-1")
    assert out.ok and out.checkpoint is not None
    assert out.checkpoint.path == f"{RUN}/checkpoint_000006"
    prefix = "experiments/default/job-a/"
    names = keys(s3, prefix)
    assert f"{prefix}checkpoint_000003/{contract.CHECKPOINT_MANIFEST}" in names
    assert f"{prefix}checkpoint_000006/v.json" in names
    lines = read(s3, prefix + contract.RESULT_FILE).decode().splitlines()
    assert [json.loads(x)["training_iteration"] for x in lines] == [1, 2, 3, 4, 5, 6]
    progress = json.loads(read(s3, prefix + contract.PROGRESS_FILE))
    assert progress["run_id"] == "uid-1" and progress["state"] == "completed"
    assert progress["latest_checkpoint"]["path"] == f"{RUN}/checkpoint_000006"
    # A restarted pod continues from the latest checkpoint.
    again = go(stop={"training_iteration": 8}, checkpoint={"frequency": 3}, run_id="uid-1")
    assert again.restored_from == f"{RUN}/checkpoint_000006"
    assert again.metrics is not None and again.metrics["value"] == 8
    # Another job under the same name is refused.
    clash = go(stop={"training_iteration": 8}, run_id="uid-2")
    assert clash.exit_code == contract.EXIT_RUN_CONFLICT


def test_restore_from_an_s3_uri_into_a_new_run(s3):
    go(stop={"training_iteration": 4}, checkpoint={"frequency": 2})
    out = go(
        storage=f"s3://{BUCKET}/experiments/default/job-b",
        restore_from=f"{RUN}/checkpoint_000002",
        stop={"training_iteration": 3},
    )
    assert out.ok and out.metrics is not None
    assert (out.metrics["training_iteration"], out.metrics["value"]) == (3, 3)
    missing = go(storage=f"s3://{BUCKET}/x/y", restore_from=f"{RUN}/checkpoint_000099")
    assert missing.exit_code == contract.EXIT_BAD_CHECKPOINT


def test_a_function_reads_its_checkpoint_back_from_s3(s3):
    def fn(config):
        start = 0
        ck = kubetune.get_checkpoint()
        if ck is not None:
            with ck.as_directory() as d, open(os.path.join(d, "s.json")) as f:
                start = json.load(f)["step"] + 1
        for step in range(start, 5):
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "s.json"), "w") as f:
                    json.dump({"step": step}, f)
                kubetune.report({"step": step}, checkpoint=kubetune.Checkpoint.from_directory(d))
            latest = kubetune.get_checkpoint()
            assert latest is not None and latest.path.startswith("s3://")

    out = go(fn, stop={"step": 2})
    assert out.ok and out.checkpoint is not None
    assert out.checkpoint.path == f"{RUN}/checkpoint_000003"
    again = go(fn)
    assert again.metrics is not None and again.metrics["step"] == 4
    assert again.checkpoint is not None
    with again.checkpoint.as_directory() as d, open(os.path.join(d, "s.json")) as f:
        assert json.load(f) == {"step": 4}
