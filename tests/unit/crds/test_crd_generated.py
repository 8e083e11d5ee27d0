"""Generated copies of the CRD (the chart's crds/ and docs/api.md) agree with
crds/, the one source, and the checks that guard them really notice drift."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


def load_script(name: str) -> ModuleType:
    """Imports a hack/ script (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f"hack_{name}", ROOT / "hack" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync_crds = load_script("sync_crds")
gen_api_docs = load_script("gen_api_docs")


def test_chart_crd_is_an_exact_copy() -> None:
    stale = sync_crds.stale_copies()
    assert not stale, f"{stale} differ from crds/: run python hack/sync_crds.py"
    assert (ROOT / "charts/kubetune/crds/kubetune.io_trainablejobs.yaml").exists()


def test_sync_check_notices_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chart_crds = tmp_path / "crds"
    shutil.copytree(ROOT / "charts/kubetune/crds", chart_crds)
    monkeypatch.setattr(sync_crds, "CHART_CRD_DIR", chart_crds)
    assert sync_crds.main(["--check"]) == 0
    copy = chart_crds / "kubetune.io_trainablejobs.yaml"
    copy.write_text(copy.read_text(encoding="utf-8").replace("maxFailures", "maxRetries"))
    (chart_crds / "stray.yaml").write_text("kind: CustomResourceDefinition\n")
    assert sync_crds.main(["--check"]) == 1
    assert sync_crds.main([]) == 0
    assert sync_crds.stale_copies() == []
    assert not (chart_crds / "stray.yaml").exists()


def test_api_docs_are_current() -> None:
    expected = gen_api_docs.render(gen_api_docs.load_crd())
    current = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert current == expected, "docs/api.md is out of date: run python hack/gen_api_docs.py"


def test_api_docs_cover_every_field() -> None:
    crd = gen_api_docs.load_crd()
    text = gen_api_docs.render(crd)
    root = gen_api_docs.storage_version(crd)["schema"]["openAPIV3Schema"]
    for top in ("spec", "status"):
        for path, _, _ in list(gen_api_docs.walk(root["properties"][top], top))[1:]:
            assert f"`{path}`" in text, f"{path} is missing from docs/api.md"
    assert "`spec.trainable` | string |  |" in text
    assert "| `spec.maxFailures` | integer | `3` |" in text


def test_api_docs_follow_a_changed_crd(tmp_path: Path) -> None:
    crd = gen_api_docs.load_crd()
    spec = gen_api_docs.storage_version(crd)["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["maxFailures"]["description"] = "A changed description."
    changed = tmp_path / "crd.yaml"
    changed.write_text(yaml.safe_dump(crd), encoding="utf-8")
    text = gen_api_docs.render(gen_api_docs.load_crd(changed))
    assert "A changed description." in text
    assert text != (ROOT / "docs" / "api.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string"}, "string"),
        ({"type": "string", "format": "date-time"}, "string (date-time)"),
        ({"type": "object", "additionalProperties": {"type": "number"}}, "map[string]number"),
        ({"type": "object", "x-kubernetes-preserve-unknown-fields": True}, "object (free-form)"),
        ({"type": "array", "items": {"type": "object"}}, "[]object"),
        ({"x-kubernetes-int-or-string": True, "anyOf": []}, "int or string"),
    ],
    ids=["string", "date-time", "map", "free-form", "array", "int-or-string"],
)
def test_describe_type(schema: dict[str, object], expected: str) -> None:
    assert gen_api_docs.describe_type(schema) == expected
