"""Finds secret values where they must never be: logs, events, status.

Pure (no cluster): the end-of-run check in test_zz_secret_leaks.py feeds it
files and values. Tests that make a Secret of their own register its values
here, so the check looks for them too.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# Shorter values (the local S3 server's access key id is `kubetune`) would be
# found in every log as ordinary words; they are identifiers, not secrets.
MIN_SECRET_LENGTH = 12

_REGISTERED: set[str] = set()


def register_secret_value(value: str) -> str:
    """Marks `value` as secret for the end-of-run scan; returns it."""
    _REGISTERED.add(value)
    return value


def registered_secret_values() -> set[str]:
    return set(_REGISTERED)


@dataclass(frozen=True)
class Leak:
    where: str  # file:line, or a description of an object
    masked_value: str
    masked_line: str

    def __str__(self) -> str:
        return f"{self.where}: {self.masked_value} in: {self.masked_line}"


def mask(value: str) -> str:
    """Enough to tell which value leaked, never the value itself."""
    return f"{value[:2]}…({len(value)} chars)"


def needles(values: Iterable[str]) -> dict[str, str]:
    """Each secret value and its base64 form (a Secret's `data` as the API
    returns it), mapped to the mask that reports it."""
    found: dict[str, str] = {}
    for value in values:
        if len(value) < MIN_SECRET_LENGTH:
            continue
        found[value] = mask(value)
        found[base64.b64encode(value.encode()).decode()] = f"base64 of {mask(value)}"
    return found


def scan_text(where: str, text: str, values: dict[str, str]) -> Iterator[Leak]:
    """Leaks in `text`, one per line and value; `where` names the source."""
    for number, line in enumerate(text.splitlines(), 1):
        for needle, masked in values.items():
            if needle in line:
                shown = line
                for other in values:
                    shown = shown.replace(other, "****")
                yield Leak(f"{where}:{number}", masked, shown.strip()[:300])


def scan_files(files: Iterable[Path], values: dict[str, str], root: Path) -> Iterator[Leak]:
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue  # a pod's log removed while we read: nothing to scan
        where = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        yield from scan_text(where, text, values)
