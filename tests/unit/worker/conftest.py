"""Fixtures shared by the worker's unit tests (tests/unit/conftest.py has the
ones every unit test may use)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

# The bucket the `s3` fixture creates.
S3_BUCKET = "kubetune-test"


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporary folders the SDK makes land in this test's tmp_path."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()


@pytest.fixture
def s3(aws_env: None) -> Iterator[Any]:
    """S3 faked by moto in this process, with the bucket S3_BUCKET: a boto3 client."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=S3_BUCKET)
        yield client
