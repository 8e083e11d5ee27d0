"""Fixtures shared by the worker's unit tests (tests/unit/conftest.py has the
ones every unit test may use)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporary folders the SDK makes land in this test's tmp_path."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
