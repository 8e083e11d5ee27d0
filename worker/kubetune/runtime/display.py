"""What a person watching a run sees: one updating line on a terminal, plain
timestamped lines in a pod log or a pipe. Called at the loop's progress
ticks (a few times a second at most), never per iteration."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from kubetune.sdk.result_keys import AUTO_FILLED_KEYS

MAX_METRICS = 4


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def summarize(iteration: int, result: dict[str, Any] | None, latest: Any) -> str:
    """`iter 12 | loss=0.1234 acc=0.91 | 3.2s | ckpt 10`."""
    parts = [f"iter {iteration}"]
    if result:
        shown = [
            f"{k}={format_value(v)}"
            for k, v in result.items()
            if k not in AUTO_FILLED_KEYS and not isinstance(v, dict | list)
        ][:MAX_METRICS]
        if shown:
            parts.append(" ".join(shown))
        total = result.get("time_total_s")
        if isinstance(total, int | float):
            parts.append(f"{total:.1f}s")
    parts.append(f"ckpt {latest.iteration}" if latest is not None else "no ckpt")
    return " | ".join(parts)


class Reporter:
    """Silent base: the loop calls these; subclasses print."""

    live = False

    def event(self, text: str) -> None:
        pass

    def progress(self, iteration: int, result: dict[str, Any] | None, latest: Any) -> None:
        pass

    def close(self) -> None:
        pass


class PlainLines(Reporter):
    """One line per event, and a progress line at most every `every_s` seconds."""

    def __init__(self, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        self._stream = stream or sys.stdout
        self._every = every_s
        self._next = 0.0
        self._last = ""

    def _print(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[kubetune {stamp}] {text}", file=self._stream, flush=True)

    def event(self, text: str) -> None:
        self._print(text)

    def progress(self, iteration: int, result: dict[str, Any] | None, latest: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        line = summarize(iteration, result, latest)
        if line != self._last:
            self._next = now + self._every
            self._last = line
            self._print(line)


class LiveLine(Reporter):
    """A single line rewritten in place; events scroll above it."""

    live = True

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._line = ""

    def _render(self) -> None:
        self._stream.write("\r\x1b[2K" + self._line)
        self._stream.flush()

    def event(self, text: str) -> None:
        self._stream.write("\r\x1b[2K" + text + "\n")
        self._render()

    def progress(self, iteration: int, result: dict[str, Any] | None, latest: Any) -> None:
        self._line = summarize(iteration, result, latest)
        self._render()

    def close(self) -> None:
        if self._line:
            self._stream.write("\n")
            self._stream.flush()
            self._line = ""


def make_reporter(verbose: int, stream: TextIO | None = None) -> Reporter:
    """LiveLine on a terminal, PlainLines otherwise, nothing with verbose=0."""
    if verbose <= 0:
        return Reporter()
    out = stream or sys.stdout
    isatty = getattr(out, "isatty", None)
    if callable(isatty) and isatty():
        return LiveLine(out)
    return PlainLines(out)
