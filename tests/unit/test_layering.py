"""Layering, checked by machine: pure modules import no I/O libraries, and the
worker imports nothing of the operator."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = ["model.py", "conditions.py", "statemachine.py", "podspec.py"]
IO_LIBS = {"kopf", "kubernetes", "boto3", "botocore"}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("name", PURE)
def test_pure_operator_modules_do_no_io(name: str) -> None:
    path = ROOT / "operator" / "kubetune_operator" / name
    assert not imported_roots(path) & IO_LIBS


def test_worker_never_imports_the_operator() -> None:
    for path in (ROOT / "worker" / "kubetune").rglob("*.py"):
        assert "kubetune_operator" not in imported_roots(path), path


def test_only_kube_module_uses_the_kubernetes_client() -> None:
    users = {
        p.name
        for p in (ROOT / "operator" / "kubetune_operator").glob("*.py")
        if "kubernetes" in imported_roots(p)
    }
    assert users == {"kube.py"}
