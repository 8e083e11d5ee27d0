"""`--watch`: follow one TrainableJob until it ends, from the API server's
watch (renewed when the server ends it), never a polling loop.

Two halves: `job_updates` turns the watch into a stream of job bodies (the
only I/O), `Watcher` turns bodies into what a person sees: on a terminal one
line redrawn in place, through a pipe one plain line per change. Tests feed
`Watcher` a fake sequence of bodies."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from kubetune.cli.render import is_terminal, outcome, progress_line

# A watch is renewed this often (and whenever the server ends it first): bounds
# how long a lost event could hide a change.
WATCH_RENEW_S = 60
CLEAR_LINE = "\r\x1b[2K"


class JobDeleted(Exception):
    """The job was deleted while being watched."""


def job_updates(kube: Any, namespace: str, name: str, first: dict[str, Any]) -> Iterator[dict]:
    """`first`, then each new version of the job until it has ended. When a
    watch ends (timeout, a dropped connection, 410 Gone) the job is read afresh
    and a new watch starts from there."""
    from urllib3.exceptions import HTTPError

    body = first
    yield body
    while not is_terminal(body):
        rv = str((body.get("metadata") or {}).get("resourceVersion") or "")
        try:
            for kind, new in kube.watch_job(namespace, name, rv, WATCH_RENEW_S):
                if kind == "DELETED":
                    raise JobDeleted(name)
                if kind in ("ADDED", "MODIFIED"):
                    body = new
                    yield body
                    if is_terminal(body):
                        return
        except HTTPError:
            pass  # the connection dropped mid-watch: read afresh and watch again
        body = kube.get_job(namespace, name)
        yield body


class Watcher:
    """Renders job bodies as they come. live=True (a terminal): one line
    rewritten with '\\r', cut to the terminal's width so it never wraps;
    live=False: a plain line whenever what it says changes."""

    def __init__(self, stream: TextIO, live: bool, width: int | None = None) -> None:
        self.stream = stream
        self.live = live
        self.width = width
        self._last = ""

    def _columns(self) -> int:
        return self.width or shutil.get_terminal_size((100, 24)).columns

    def update(self, body: dict[str, Any]) -> None:
        line = progress_line(body, bar_width=24 if self.live else None)
        if line == self._last:
            return
        self._last = line
        if self.live:
            self.stream.write(CLEAR_LINE + line[: max(10, self._columns() - 1)])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Ends the live line (the cursor goes to a new line)."""
        if self.live and self._last:
            self.stream.write("\n")
            self.stream.flush()
        self._last = ""

    def finish(self, body: dict[str, Any]) -> int:
        """Prints the outcome line of a finished job and returns the exit code."""
        self.close()
        code, line = outcome(body)
        self.stream.write(line + "\n")
        self.stream.flush()
        return code

    def follow(self, bodies: Iterable[dict[str, Any]]) -> int:
        """Renders every body; the outcome once the job has ended (0 Succeeded,
        1 Failed). If the stream ends first (it should not), 1."""
        try:
            for body in bodies:
                self.update(body)
                if is_terminal(body):
                    return self.finish(body)
        finally:
            self.close()
        return 1


def is_live(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(callable(isatty) and isatty())
