"""The `kubetune` command line: `run` on this machine, and the cluster
commands (submit, get, describe, logs, results, suspend, resume)."""

from kubetune.cli.command import main

__all__ = ["main"]
