"""The progress document is untrusted: one that is malformed, huge, another
run's, or points outside the job's folder is refused or ignored with one log
line by the operator's readers (kubetune_contract.Progress, storageio), and
never reaches status in a shape the API would refuse. (The run folder's own
readers: tests/unit/worker/storage/test_untrusted_storage.py.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest
import yaml
from moto import mock_aws
from operator_factories import NOW, UID, job

import kubetune_contract as contract
from kubetune.storage.runfolder import MAX_PROGRESS_BYTES
from kubetune.storage.s3 import S3Storage
from kubetune_contract import Progress
from kubetune_operator import storageio
from kubetune_operator.statemachine import cap_result, compute_decision

ROOT = Path(__file__).resolve().parents[3]
RUN = "s3://b/p/ns/j"


def status_schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / "kubetune.io_trainablejobs.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return dict(schema["properties"]["status"])


def assert_valid_status(status: dict[str, Any]) -> None:
    """What the apiserver would check: the CRD's status schema, and a body that
    is strict JSON (no NaN or infinities, which the API refuses)."""
    json.dumps(status, allow_nan=False)
    errors = list(jsonschema.Draft7Validator(status_schema()).iter_errors(status))
    assert not errors, [e.message for e in errors]


def good_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "run_id": UID,
        "state": "running",
        "iteration": 4,
        "last_result": {"loss": 0.5},
        "updated": 1767323045.0,
        "latest_checkpoint": {
            "path": f"{RUN}/checkpoint_000004",
            "iteration": 4,
            "time": "2026-01-02T03:04:05Z",
        },
        "best_checkpoint": None,
        "checkpoints": [],
    }
    doc.update(over)
    return doc


# --- the progress document ---------------------------------------------------


@pytest.mark.parametrize(
    "over",
    [
        {"iteration": -1},
        {"iteration": float("inf")},
        {"iteration": float("nan")},
        {"iteration": 2**64},
        {"iteration": 3.5},
        {"iteration": "7"},
        {"updated": float("nan")},
        {"updated": float("inf")},
        {"updated": -5},
        {"updated": "soon"},
        {"latest_checkpoint": {"path": f"{RUN}/checkpoint_000004", "iteration": -3}},
        {"latest_checkpoint": {"path": f"{RUN}/checkpoint_000004", "iteration": 1e400}},
        {"latest_checkpoint": "checkpoint_000004"},
        {"checkpoints": {"a": 1}},
        {"last_result": [1, 2]},
    ],
    ids=lambda o: f"{next(iter(o))}={next(iter(o.values()))!r:.20}",
)
def test_a_progress_document_with_a_bad_field_is_refused(over: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        Progress.from_dict(good_doc(**over))


@pytest.mark.parametrize(
    "path",
    [
        "s3://b/p/ns/other/checkpoint_000004",  # another job's folder
        "s3://b/p/ns/j2/checkpoint_000004",  # a sibling sharing the prefix
        "s3://other/p/ns/j/checkpoint_000004",  # another bucket
        f"{RUN}/../k/checkpoint_000004",
        f"{RUN}/checkpoint_000004/../../x",
        f"{RUN}/deep/checkpoint_000004",
        f"{RUN}/checkpoint_4",
        "/etc",
        "",
    ],
)
def test_checkpoints_outside_the_job_folder_are_dropped(path: str) -> None:
    entry = {"path": path, "iteration": 4}
    doc = good_doc(latest_checkpoint=entry, best_checkpoint=entry, checkpoints=[entry])
    kept, dropped = Progress.from_dict(doc).within(RUN)
    assert kept.latest_checkpoint is None and kept.best_checkpoint is None
    assert kept.checkpoints == [] and dropped == [path]


def test_own_checkpoints_are_kept() -> None:
    kept, dropped = Progress.from_dict(good_doc()).within(RUN + "/")
    assert kept.latest_checkpoint is not None and dropped == []


def test_cap_result_keeps_the_api_happy() -> None:
    capped = cap_result(
        {"inf": float("inf"), "ninf": float("-inf"), "nan": float("nan"), "big": 2**70, "ok": 3}
    )
    assert capped == {"inf": None, "ninf": None, "nan": None, "big": None, "ok": 3}


def test_hostile_progress_never_makes_an_invalid_status() -> None:
    outside = {"path": "s3://evil/x/checkpoint_000009", "iteration": 9}
    doc = good_doc(
        last_result={f"k{i}": float("inf") if i % 2 else 2**80 for i in range(500)},
        latest_checkpoint=outside,
        best_checkpoint=outside,
        checkpoints=[outside] * 50,
        message="x" * 100_000,
    )
    status = compute_decision(job(), [], Progress.from_dict(doc), NOW).status
    assert_valid_status(status)
    assert "latestCheckpoint" not in status and "bestCheckpoint" not in status
    assert len(status["lastResult"]) <= 30


def test_another_runs_progress_never_reaches_status() -> None:
    doc = good_doc(run_id="someone-else", iteration=99)
    status = compute_decision(job(), [], Progress.from_dict(doc), NOW).status
    assert "iteration" not in status and "latestCheckpoint" not in status


# --- what the operator reads -------------------------------------------------------


@pytest.fixture
def s3_store(aws_env: None) -> Any:
    storageio._client_for.cache_clear()
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="bkt")
        yield S3Storage("s3://bkt/p/ns/j")
    storageio._client_for.cache_clear()


def operator_read(
    s3_store: S3Storage, doc: bytes, caplog: pytest.LogCaptureFixture
) -> Progress | None:
    s3_store.write_bytes(contract.PROGRESS_FILE, doc)
    with caplog.at_level(logging.WARNING):
        return storageio.read_progress(
            job({"trainable": "m:T", "storage": {"uri": "s3://bkt/p"}}), None
        )


@pytest.mark.parametrize(
    "doc",
    [
        b"Infinity",
        b'{"run_id": "uid-1", "iteration": Infinity}',
        b'{"run_id": "uid-1", "iteration": -1}',
        b'{"run_id": "uid-1", "iteration": 1, "updated": NaN}',
        b'{"run_id": "someone-else", "iteration": 1}',
        b"x" * (MAX_PROGRESS_BYTES + 1),
    ],
    ids=["not-an-object", "inf", "negative", "nan-time", "foreign", "huge"],
)
def test_the_operator_ignores_bad_progress_with_one_line(
    s3_store: S3Storage, doc: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    assert operator_read(s3_store, doc, caplog) is None
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_the_operator_drops_outside_checkpoints_with_one_line(
    s3_store: S3Storage, caplog: pytest.LogCaptureFixture
) -> None:
    outside = {"path": "s3://bkt/p/ns/k/checkpoint_000001", "iteration": 1}
    doc = json.dumps(good_doc(latest_checkpoint=outside, checkpoints=[outside])).encode()
    progress = operator_read(s3_store, doc, caplog)
    assert progress is not None and progress.iteration == 4
    assert progress.latest_checkpoint is None and progress.checkpoints == []
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "outside s3://bkt/p/ns/j" in lines[0]


def test_result_lines_that_are_not_results_are_skipped() -> None:
    data = b"\n".join(
        [
            b'{"training_iteration": 1, "loss": 1}',
            b"{broken",
            b"[1, 2]",
            b'{"training_iteration": "two"}',
            b'{"training_iteration": -3}',
            b"",
            b'{"training_iteration": 3, "loss": 0.5}',
        ]
    )
    rows, bad = storageio.parse_result_lines(data)
    assert [r["training_iteration"] for r in rows] == [1, 3] and bad == 4
