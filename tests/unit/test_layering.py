"""Layering, checked by machine: the import-linter contracts in pyproject.toml
([tool.importlinter], also run by `make lint`) pass, a planted back-import breaks
them, and the one rule import-linter cannot state ("the standard library only")
is checked here on the syntax tree."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The source folders lint-imports reads: the root packages and the config.
SOURCE_FOLDERS = ["contract", "worker", "operator", "localcluster"]
# import-linter ships no `python -m importlinter`: call its console script's function
# with this interpreter, so the test uses the import-linter of the environment it runs in.
LINT_IMPORTS = (
    "import sys; from importlinter.cli import lint_imports_command; "
    "sys.exit(lint_imports_command(prog_name='lint-imports'))"
)


def lint_imports(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache", "--no-logo", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def python_sources_only(folder: str, names: list[str]) -> list[str]:
    """copytree's ignore: everything but the .py files and the folders holding them."""
    return [
        n
        for n in names
        if n == "__pycache__" or not (n.endswith(".py") or (Path(folder) / n).is_dir())
    ]


def broken_contracts(output: str) -> list[str]:
    return [
        line.removesuffix(" BROKEN") for line in output.splitlines() if line.endswith(" BROKEN")
    ]


def test_import_contracts_are_kept() -> None:
    result = lint_imports(ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"lint-imports: broken contracts {broken_contracts(output)} (pyproject.toml, "
        f"[tool.importlinter]); its output:\n{output}"
    )
    assert "BROKEN" not in output and " KEPT" in output, output


def test_a_planted_back_import_breaks_the_worker_layers(tmp_path: Path) -> None:
    """storage is the lowest layer: storage importing runtime must fail the lint."""
    for folder in SOURCE_FOLDERS:
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=python_sources_only)
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    base = tmp_path / "worker" / "kubetune" / "storage" / "base.py"
    base.write_text(base.read_text() + "\nfrom kubetune.runtime import loop  # planted\n")
    # The copies come first on sys.path, before the editable install's finder
    # (appended to sys.meta_path) that points at the real tree.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        str(tmp_path / f) for f in ["contract", "worker", "operator"]
    )

    result = lint_imports(tmp_path, env=env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    layers = "Layers inside the worker: cli | worker above client, runtime, sdk, storage"
    assert layers in broken_contracts(output), output
    assert "kubetune.storage is not allowed to import kubetune.runtime:" in output, output
    assert "kubetune.storage.base -> kubetune.runtime.loop" in output, output


# --- what import-linter cannot state ------------------------------------------------
# A forbidden contract names the packages it forbids: it cannot forbid "everything
# outside the standard library", so a new third-party import would pass the
# contracts' lists. These packages must import the standard library and themselves only.
STDLIB_ONLY = {
    "kubetune_contract": ROOT / "contract" / "kubetune_contract",
    "kubetune_operator.sweeps.algorithms": (
        ROOT / "operator" / "kubetune_operator" / "sweeps" / "algorithms"
    ),
}


def foreign_imports(package: str, folder: Path) -> list[str]:
    found: list[str] = []
    for path in sorted(folder.rglob("*.py")):
        # The package the module is in (a package's __init__ is in itself).
        parts = [*package.split("."), *path.relative_to(folder).with_suffix("").parts]
        here = parts[:-1]
        for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                anchor = here[: len(here) - node.level + 1] if node.level else []
                names = [".".join([*anchor, *([node.module] if node.module else [])])]
            else:
                continue
            for name in names:
                inside = name == package or name.startswith(package + ".")
                if not inside and name.split(".")[0] not in sys.stdlib_module_names:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    return found


def test_stdlib_only_packages_import_only_the_standard_library() -> None:
    for package, folder in STDLIB_ONLY.items():
        assert list(folder.glob("*.py")), f"{package}: no sources in {folder}"
        assert foreign_imports(package, folder) == [], package
