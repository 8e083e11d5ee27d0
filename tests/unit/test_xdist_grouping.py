"""The end-to-end suite's parallel phase counts on pytest-xdist's --dist
loadgroup: the GPU modules (Kueue's tests among them) must run in one worker,
or two workers start Kueue twice and take each other's GPUs. Some pytest
releases make xdist drop the groups without a word (pytest-xdist issue 1386);
this runs a small suite grouped the way tests/e2e/conftest.py groups and
fails if the groups were not kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CONFTEST = """
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if item.name.startswith("test_gpu"):
            item.add_marker(pytest.mark.xdist_group("gpu"))
"""

TESTS = "import os\n" + "".join(
    f"def test_{kind}_{i}():\n    print('ran on', os.environ['PYTEST_XDIST_WORKER'])\n"
    for kind in ("gpu", "any")
    for i in range(6)
)


def test_loadgroup_keeps_groups_made_by_a_conftest_hook(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_grouped.py").write_text(TESTS)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2",
         "--dist", "loadgroup", "-v", "-o", "addopts=", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    workers = {
        line.split()[0]
        for line in proc.stdout.splitlines()
        if "PASSED" in line and "::test_gpu_" in line
    }
    assert len(workers) == 1, (
        f"the gpu group ran on {sorted(workers)}: this pytest and pytest-xdist do not "
        f"keep --dist loadgroup's groups (pyproject.toml pins a pytest that does)\n{proc.stdout}"
    )
