"""What the command line and the worker pod share at exit: the one-line
"<Reason>: <message>" on stderr and in the termination-message file, and the
immediate exit on a second signal."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import kubetune_contract as contract

# Kubernetes lets a pod name another path (terminationMessagePath); so do we.
TERMINATION_PATH_ENV = "KUBETUNE_TERMINATION_MESSAGE_PATH"
_MAX_MESSAGE = 3000  # the kubelet keeps at most 4096 bytes


def exit_line(code: int, message: str) -> str:
    reason = contract.EXIT_REASONS.get(code, "Error")
    text = " ".join(str(message).split())
    return f"{reason}: {text}"[:_MAX_MESSAGE]


def write_termination_message(line: str) -> None:
    """Best effort: the default path exists only inside a pod (the kubelet mounts
    it), so it is never created, and any error is ignored."""
    override = os.environ.get(TERMINATION_PATH_ENV)
    path = override or contract.TERMINATION_MESSAGE_PATH
    flags = os.O_WRONLY | os.O_TRUNC | (os.O_CREAT if override else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        return
    try:
        os.write(fd, (line + "\n").encode(errors="replace"))
    except OSError:
        pass
    finally:
        os.close(fd)


def finish(code: int, message: str) -> int:
    """Report how the process ends and return its exit code."""
    line = exit_line(code, message)
    write_termination_message(line)
    sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)
    return code


def exit_at_once(signame: str) -> None:
    """A second SIGTERM/SIGINT: leave now. Whatever upload is in flight stays
    without a manifest, so it never counts as a checkpoint."""
    line = exit_line(
        contract.EXIT_STOP_UNSAVED,
        f"second {signame}: exited at once without saving; a restart resumes from "
        "the latest complete checkpoint",
    )
    write_termination_message(line)
    with contextlib.suppress(OSError):
        os.write(2, ("\n" + line + "\n").encode(errors="replace"))
    os._exit(contract.EXIT_STOP_UNSAVED)


def setup_logging() -> None:
    """kubetune's warnings (an unknown stop key ...) as plain lines on stderr."""
    log = logging.getLogger("kubetune")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("kubetune: %(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.WARNING)
        log.propagate = False
