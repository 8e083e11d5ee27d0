"""kubetune_contract stands alone: every module of it imports with `python -I` in a
fresh virtual environment that holds nothing else, and loads nothing outside the
standard library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "contract"
PACKAGE = CONTRACT / "kubetune_contract"

# Run by the fresh interpreter: put the contract's folder first on the path, import
# every module named on the command line, and say what was loaded and from where.
PROBE = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
for name in sys.argv[2:]:
    importlib.import_module(name)
print(json.dumps({
    "isolated": sys.flags.isolated,
    "path": sys.path,
    "modules": sorted(sys.modules),
    "files": {n: getattr(m, "__file__", None) for n, m in sys.modules.items()
              if n.split(".")[0] == "kubetune_contract"},
}))
"""


def contract_modules() -> list[str]:
    """Every module of the package, found by walking its folder."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(CONTRACT).with_suffix("").parts
        if parts[-1] == "__main__":
            continue  # importing it would run it
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def test_the_contract_imports_alone_in_an_empty_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    python = venv / "bin" / "python"
    modules = contract_modules()
    assert "kubetune_contract" in modules and "kubetune_contract.progress" in modules, modules

    result = subprocess.run(
        [str(python), "-I", "-c", PROBE, str(CONTRACT), *modules],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)

    assert seen["isolated"] == 1
    # The venv's own site-packages holds nothing that could stand in.
    site = [p for p in seen["path"] if p.endswith("site-packages")]
    assert site and all(not any(Path(p).iterdir()) for p in site), site
    # Each module of the contract came from the source tree.
    assert sorted(seen["files"]) == sorted(modules)
    for name, file in seen["files"].items():
        assert file and Path(file).is_relative_to(PACKAGE), (name, file)
    foreign = [
        name
        for name in seen["modules"]
        if name != "__main__"
        and name.split(".")[0] not in sys.stdlib_module_names
        and name.split(".")[0] != "kubetune_contract"
    ]
    assert foreign == [], foreign
