"""The image and the chart that ship the API stay consistent with the project:
entry points that exist, files the build context really holds, matching versions.
No container engine or helm needed."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]


def console_scripts() -> set[str]:
    """Entry points of the installed kubetune distribution (pyproject's [project.scripts])."""
    dist = importlib.metadata.distribution("kubetune")
    return {ep.name for ep in dist.entry_points if ep.group == "console_scripts"}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerignored(path: str) -> bool:
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if p.strip() and not p.startswith("#")
    ]
    first = path.strip("/").split("/")[0]
    return any(fnmatch.fnmatch(first, p) or fnmatch.fnmatch(path, p) for p in patterns)


def test_dockerfile_base_and_entry_points() -> None:
    steps = dockerfile_instructions()
    # Debian's own python3 on Debian's slim base: `make image` makes that base
    # from Debian's packages, so the name must be one debootstrap can stand for.
    assert steps[0] == ("FROM", "docker.io/library/debian:bookworm-slim AS runtime")
    scripts = console_scripts()
    cmd = [args for word, args in steps if word == "CMD"]
    assert cmd == ['["kubetune-operator"]']
    assert "kubetune-operator" in scripts and "kubetune-worker" in scripts
    assert any(word == "RUN" and "pip install" in args for word, args in steps)
    # Only the build stage has pip's network settings; the final stage copies its venv.
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    assert not any(word in ("ARG", "RUN") for word, _ in final), final


def test_dockerfile_copies_only_what_the_context_holds() -> None:
    copies = [args.split() for word, args in dockerfile_instructions() if word == "COPY"]
    assert copies
    sources = [src for parts in copies for src in parts[:-1] if not src.startswith("--")]
    for src in sources:
        assert not dockerignored(src), f"{src} is copied but excluded by .dockerignore"
    assert {"pyproject.toml", "contract/", "worker/", "operator/", "examples/"} <= set(sources)
    for src in ("pyproject.toml", "contract", "worker", "operator"):
        assert (ROOT / src).exists(), src


def test_dockerfile_runs_as_a_numeric_user() -> None:
    users = [args for word, args in dockerfile_instructions() if word == "USER"]
    # runAsNonRoot in the chart can only verify a numeric user.
    assert users and users[-1].isdigit() and users[-1] != "0"


def test_build_context_leaves_out_local_state() -> None:
    for path in (".venv", ".cluster", ".git", "tests"):
        assert dockerignored(path), path


def test_chart_metadata_matches_the_project() -> None:
    chart = yaml.safe_load((ROOT / "charts/kubetune/Chart.yaml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "kubetune"
    assert chart["version"] == "0.2.0"
    assert chart["appVersion"] == importlib.metadata.version("kubetune")


def test_chart_values_are_all_in_its_schema() -> None:
    values = yaml.safe_load((ROOT / "charts/kubetune/values.yaml").read_text(encoding="utf-8"))
    schema = yaml.safe_load((ROOT / "charts/kubetune/values.schema.json").read_text())
    assert set(values) == set(schema["properties"])
    assert values["watchNamespaces"] == []
    assert values["workerImage"] == ""
