"""The operator reads a job's storage with the credentials the job names, and
never with its own in their place: a Secret that is missing from the job's
namespace (say, one that exists only in another) stops the read instead of
letting the operator's identity stand in for it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from operator_factories import job

from kubetune.storage import open_storage
from kubetune.storage.runfolder import RunStore
from kubetune_operator import kube, storageio
from kubetune_operator.controller import Controller, ControllerSettings
from kubetune_operator.model import JobView

BUCKET = "team-b"
STORAGE = {"uri": f"s3://{BUCKET}/exp", "secretRef": {"name": "only-in-team-b"}}


def a_job(**spec: Any) -> JobView:
    """A job of team-a whose storage names team-b's Secret."""
    return job({"trainable": "m:T", "storage": STORAGE, **spec}, namespace="team-a", uid="u-1")


@pytest.fixture
def bucket(aws_env: None) -> Iterator[None]:
    """A bucket the ambient credentials (the operator pod's own) can read,
    holding the job's progress and a complete checkpoint."""
    storageio._client_for.cache_clear()
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        store = RunStore(open_storage(a_job().run_uri))
        store.write_progress(json.dumps({"run_id": "u-1", "state": "running", "iteration": 3,
                                         "last_result": {"training_iteration": 3},
                                         "updated": time.time()}).encode())  # fmt: skip
        yield
    storageio._client_for.cache_clear()


def test_a_missing_secret_gives_empty_credentials_not_none() -> None:
    # None would mean "the job names no Secret" and open the ambient credentials.
    assert storageio.credentials_from_secret(None) == {}
    assert storageio.credentials_from_secret({"other": "x"}) == {}
    named = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "key", "note": "n"}
    assert storageio.credentials_from_secret(named) == {
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "key",
    }


def test_controller_credentials_of_a_missing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, str]] = []

    def read_secret(namespace: str, name: str) -> None:
        asked.append((namespace, name))
        return None

    monkeypatch.setattr(kube, "read_secret", read_secret)
    assert Controller(ControllerSettings()).credentials(a_job()) == {}
    assert asked == [("team-a", "only-in-team-b")]  # the job's own namespace only


def test_progress_is_not_read_with_the_operators_own_credentials(bucket: None) -> None:
    assert storageio.read_progress(a_job(), storageio.credentials_from_secret(None)) is None
    # A job that names no Secret uses the pod's own, as its worker does.
    unnamed = job({"storage": {"uri": STORAGE["uri"]}}, namespace="team-a", uid="u-1")
    progress = storageio.read_progress(unnamed, None)
    assert progress is not None and progress.iteration == 3


def test_restore_check_says_the_secret_is_missing(bucket: None) -> None:
    job = a_job(restoreFrom=f"s3://{BUCKET}/exp/team-a/j/checkpoint_000003")
    problem = storageio.check_restore_from(job, {})
    assert problem is not None
    assert "'only-in-team-b'" in problem and "job's namespace" in problem, problem


def test_sweep_writes_and_copies_refuse_a_missing_secret(bucket: None) -> None:
    folder = f"s3://{BUCKET}/exp/team-a/sweep"
    assert not storageio.write_object(folder, "trials.json", b"[]", STORAGE, {})
    assert storageio.write_object(folder, "trials.json", b"[]", {"uri": folder}, None)
    target = f"{folder}/copy.json"
    assert not storageio.copy_object(f"{folder}/trials.json", target, STORAGE, {})
    assert boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=target).get("KeyCount") == 0
