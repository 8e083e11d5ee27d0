"""Errors the SDK raises on bad input, each carrying the exit code the command
line and the worker pod end with, so one mapping serves both."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubetune import protocol

if TYPE_CHECKING:
    from kubetune.outcome import RunResult


class KubetuneError(Exception):
    """A problem the user must fix; str(err) is one line naming it and the fix."""

    exit_code = protocol.EXIT_TRAINABLE_ERROR


class InvalidSettings(KubetuneError, ValueError):
    """Bad command line, run options or worker spec."""

    exit_code = protocol.EXIT_USAGE


class MissingMetric(InvalidSettings):
    """A setting names a metric (a stop criterion, the checkpoint score attribute)
    that the trainable's results do not carry, so the setting could never act:
    the run ends at the first result that shows it, as Ray's trial runner did,
    instead of training (and holding its GPU) forever."""


class InvalidTrainable(KubetuneError):
    """MODULE:ATTR does not import, or is neither a Trainable nor a function, or
    step() broke the contract (returned a non-dict)."""

    exit_code = protocol.EXIT_BAD_TRAINABLE


class InvalidCheckpoint(KubetuneError):
    """The checkpoint to restore is missing, incomplete, or fails to load."""

    exit_code = protocol.EXIT_BAD_CHECKPOINT


class StepResultError(AssertionError):
    """step() returned something other than a dict. An AssertionError, as in Ray,
    so code that catches Ray's assertion keeps working."""


class RunFailed(KubetuneError):
    """Raised by `kubetune.run` when the run ends failed; `.result` holds the outcome."""

    def __init__(self, message: str, result: RunResult, exit_code: int) -> None:
        super().__init__(message)
        self.result = result
        self.exit_code = exit_code


def one_line(exc: BaseException) -> str:
    """`Type: message` on one line, the form every exit message uses for an error."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def describe(value: Any) -> str:
    """A short type name for messages ("int", "list", "MyClass")."""
    return type(value).__name__
