"""SIGTERM/SIGINT handling for the loop. The first signal only sets a flag: the
loop finishes the step in flight, saves, and exits 75. A second one exits at
once; since a checkpoint's manifest is written last and only after its upload
returns, a half-uploaded checkpoint is never marked complete."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

_HANDLED = (signal.SIGTERM, signal.SIGINT)


def _write_stderr(text: str) -> None:
    # os.write, not print: a handler may interrupt a print to the same stream,
    # and re-entering a buffered writer raises.
    with contextlib.suppress(OSError):
        os.write(2, text.encode(errors="replace"))


class StopSignals:
    """Installs the handlers for one run (main thread only) and restores the
    previous ones afterwards."""

    def __init__(self, on_second: Callable[[str], None] | None = None) -> None:
        # on_second(signal name): what a second signal does; None raises
        # KeyboardInterrupt (library use), the command line exits at once.
        self.requested = False
        self.signame = ""
        self._on_second = on_second
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only; a run elsewhere has no graceful stop
        for sig in _HANDLED:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def request(self, signame: str = "request") -> None:
        """Ask the loop to stop as a signal would (tests, embedding code)."""
        self.requested = True
        self.signame = self.signame or signame

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not self.requested:
            self.request(name)
            _write_stderr(
                f"kubetune: {name} received: finishing the step in flight, then saving a "
                f"checkpoint (send {name} again to exit at once)\n"
            )
            return
        if self._on_second is not None:
            self._on_second(name)
        raise KeyboardInterrupt(f"second {name}: stopping at once")
