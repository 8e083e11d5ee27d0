"""Copies the CRD from crds/ (the one source) into the Helm chart, so `helm install`
ships exactly the API the repo defines; `--check` only reports drift.

Usage: python hack/sync_crds.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIR = ROOT / "crds"
CHART_CRD_DIR = ROOT / "charts" / "kubetune" / "crds"


def shown(path: Path) -> str:
    """A path as the user should see it: relative to the repo when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def crd_pairs() -> list[tuple[Path, Path]]:
    """Each CRD in crds/ with the path of its copy in the chart."""
    return [(src, CHART_CRD_DIR / src.name) for src in sorted(SOURCE_DIR.glob("*.yaml"))]


def stale_copies() -> list[Path]:
    """Chart copies that are missing or differ from crds/, and chart CRDs with no source."""
    pairs = crd_pairs()
    stale = [dst for src, dst in pairs if not dst.exists() or dst.read_bytes() != src.read_bytes()]
    sources = {dst.name for _, dst in pairs}
    stale += [p for p in sorted(CHART_CRD_DIR.glob("*.yaml")) if p.name not in sources]
    return stale


def sync() -> list[Path]:
    """Makes the chart's crds/ an exact copy of crds/; returns the files it wrote or removed."""
    CHART_CRD_DIR.mkdir(parents=True, exist_ok=True)
    changed = stale_copies()
    for src, dst in crd_pairs():
        if dst in changed:
            dst.write_bytes(src.read_bytes())
    sources = {src.name for src in SOURCE_DIR.glob("*.yaml")}
    for path in changed:
        if path.name not in sources:
            path.unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift, change nothing")
    args = parser.parse_args(argv)
    if not list(SOURCE_DIR.glob("*.yaml")):
        print(f"error: no CRD in {shown(SOURCE_DIR)}/", file=sys.stderr)
        return 1
    if args.check:
        stale = stale_copies()
        for path in stale:
            print(
                f"error: {shown(path)} differs from crds/: run python hack/sync_crds.py",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in sync():
        print(f"updated {shown(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
