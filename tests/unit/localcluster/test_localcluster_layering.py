"""The local cluster serves the tests, the benchmarks and the demo only: no
product code (worker/, operator/, or anything else outside tests/ and bench/)
imports localcluster, so what ships never depends on the test cluster."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# Where importing localcluster is allowed (localcluster itself included).
USERS = {"tests", "bench", "localcluster"}
NOT_SOURCES = {"build", "dist", "node_modules"}


def product_files() -> list[Path]:
    found: list[Path] = []
    for top in sorted(REPO.iterdir()):
        if top.name in USERS | NOT_SOURCES or top.name.startswith(".") or not top.is_dir():
            continue
        found += sorted(top.rglob("*.py"))
    return found


def imports_localcluster(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        else:
            continue
        if any(name.split(".")[0] == "localcluster" for name in names):
            return True
    return False


def test_no_product_code_imports_localcluster() -> None:
    files = product_files()
    scanned = {p.relative_to(REPO).parts[0] for p in files}
    assert {"worker", "operator"} <= scanned  # the check looked where it matters
    offenders = [str(p.relative_to(REPO)) for p in files if imports_localcluster(p)]
    assert offenders == []
