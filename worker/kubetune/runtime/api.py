"""`kubetune.run`: the worker pod's loop, in this process, on local storage by
default, so a trainable can be developed and tested without a cluster."""

from __future__ import annotations

import os
from typing import Any

from kubetune.runtime.display import Reporter, make_reporter
from kubetune.runtime.loader import check_trainable, load_trainable
from kubetune.runtime.loop import Runner
from kubetune.runtime.outcome import RunFailed, RunOptions, RunResult
from kubetune.runtime.signals import StopSignals
from kubetune.sdk.checkpoint_config import CheckpointConfig
from kubetune.sdk.errors import InvalidSettings, describe

DEFAULT_STORAGE_ROOT = "kubetune_results"


def default_name(trainable: Any) -> str:
    name = getattr(trainable, "__name__", None) or type(trainable).__name__
    return str(name)


def run(
    trainable: Any,
    *,
    config: dict[str, Any] | None = None,
    stop: Any = None,
    storage: str | os.PathLike[str] | None = None,
    checkpoint: CheckpointConfig | dict[str, Any] | None = None,
    restore_from: str | None = None,
    max_failures: int = 0,
    name: str | None = None,
    endpoint_url: str | None = None,
    run_id: str | None = None,
    checkpoint_config: CheckpointConfig | dict[str, Any] | None = None,
    verbose: int = 1,
    raise_on_failure: bool = True,
    reporter: Reporter | None = None,
    signals: StopSignals | None = None,
) -> RunResult:
    """Run a trainable (a Trainable subclass, a function, or "MODULE:ATTR") to its
    stop criterion and return how it ended (`.metrics`, `.checkpoint`, ...).

    storage is the run's own folder (default ./kubetune_results/<name>). If it
    already holds a complete checkpoint, the run resumes from the latest one;
    otherwise restore_from (a checkpoint path or URI) is restored first.
    `checkpoint` takes a CheckpointConfig or a dict (frequency, at_end,
    num_to_keep, score_attribute, score_order). raise_on_failure raises
    RunFailed when the run ends failed (the result is attached)."""
    obj = load_trainable(trainable) if isinstance(trainable, str) else check_trainable(trainable)
    if config is not None and not isinstance(config, dict):
        raise InvalidSettings(f"config must be a dict, not {describe(config)}")
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < -1:
        raise InvalidSettings(
            f"max_failures must be an integer >= -1 (-1 = unlimited), got {max_failures!r}"
        )
    if checkpoint is not None and checkpoint_config is not None:
        raise InvalidSettings("give checkpoint or checkpoint_config, not both")
    run_name = name or default_name(obj)
    opts = RunOptions(
        name=run_name,
        storage=os.fspath(storage) if storage else os.path.join(DEFAULT_STORAGE_ROOT, run_name),
        config=dict(config or {}),
        stop=stop,
        checkpoint=CheckpointConfig.from_any(
            checkpoint if checkpoint is not None else checkpoint_config
        ),
        restore_from=restore_from,
        max_failures=max_failures,
        run_id=run_id,
        endpoint_url=endpoint_url,
        reporter=reporter if reporter is not None else make_reporter(verbose),
        signals=signals if signals is not None else StopSignals(),
    )
    runner = Runner(obj, opts)
    try:
        result = runner.execute()
    finally:
        opts.reporter.close()
    if raise_on_failure and result.state == "failed":
        raise RunFailed(result.message, result, result.exit_code) from result.error
    return result
