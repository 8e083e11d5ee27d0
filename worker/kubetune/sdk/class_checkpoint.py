"""The folder a class trainable's save() fills and restore() reads, kept apart
from the Trainable's hooks and result keys (kubetune.sdk.trainable): the
user's files or the dict save_checkpoint() returned (pickled), and, for a
folder saved by user code outside a run, the same manifest the loop commits,
so that restore(path) continues the counters."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import cloudpickle

import kubetune_contract as contract
from kubetune.sdk.checkpoint_handle import Checkpoint, TrainingResult, is_remote
from kubetune.sdk.errors import describe
from kubetune.sdk.result_keys import EPISODES_TOTAL, TIMESTEPS_TOTAL, TRAINING_ITERATION

DICT_CHECKPOINT_FILE = "_dict_checkpoint.pkl"


def prepare_folder(checkpoint_dir: str | None, *, in_run: bool) -> str:
    """The folder save() fills: checkpoint_dir (created), or a new temporary
    folder. Outside a run, a manifest left there by an earlier save is removed
    first: it must not vouch for what save_checkpoint() is about to change."""
    if checkpoint_dir:
        os.makedirs(checkpoint_dir, exist_ok=True)
        target = checkpoint_dir
    else:
        target = tempfile.mkdtemp(prefix="kubetune-checkpoint-")
    if not in_run:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(target, contract.CHECKPOINT_MANIFEST))
    return target


def store_returned(target: str, returned: Any) -> None:
    """What save_checkpoint(target) returned: a dict is pickled into target; a
    path must be target itself."""
    if isinstance(returned, dict):
        with open(os.path.join(target, DICT_CHECKPOINT_FILE), "wb") as f:
            cloudpickle.dump(returned, f)
    elif isinstance(returned, str) and os.path.normpath(returned) != os.path.normpath(target):
        raise ValueError(
            "The returned checkpoint path from save_checkpoint must be None or the same as "
            f"the provided path argument: got {returned!r}, expected {target!r}; write "
            "into checkpoint_dir and return None"
        )


def counter_metrics(
    last_result: dict[str, Any] | None,
    iteration: int,
    time_total: Any,
    timesteps_total: Any,
    episodes_total: Any,
) -> dict[str, Any]:
    """The last result, with the counters restore() reads filled in from the
    trainable's own state (a result may lack them: none yet, or restored since)."""
    metrics = dict(last_result) if last_result else {}
    if metrics.get(TRAINING_ITERATION) != iteration:
        # The last result is older than the counters (restored since): use them.
        metrics = {}
    metrics[TRAINING_ITERATION] = iteration
    metrics.setdefault("time_total_s", time_total)
    if timesteps_total is not None:
        metrics.setdefault(TIMESTEPS_TOTAL, timesteps_total)
    if episodes_total is not None:
        metrics.setdefault(EPISODES_TOTAL, episodes_total)
    return metrics


def write_manifest(folder: str, iteration: int, metrics: dict[str, Any]) -> None:
    """What the loop's commit writes with a checkpoint (the same manifest, the
    same metrics), so `restore(path)` of a folder saved by user code continues
    the counters, and `kubetune.run(restore_from=path)` accepts it. Written
    last and atomically: a folder without it is a plain folder."""
    from kubetune.storage.checkpoints import build_manifest

    manifest = os.path.join(folder, contract.CHECKPOINT_MANIFEST)
    if os.path.exists(manifest):
        raise ValueError(
            f"save_checkpoint() wrote a file named {contract.CHECKPOINT_MANIFEST}, a name "
            "kubetune reserves: rename that file"
        )
    files = []
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path):
                rel = os.path.relpath(path, folder).replace(os.sep, "/")
                files.append((rel, os.path.getsize(path)))
    doc = build_manifest(iteration, files, metrics, time.time())
    fd, tmp = tempfile.mkstemp(prefix=".kubetune-tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, sort_keys=True, default=str)
        os.replace(tmp, manifest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def manifest_metrics(checkpoint: Checkpoint) -> dict[str, Any]:
    """The metrics kubetune stored with a committed checkpoint, so that restoring by
    path continues the iteration count; {} for a folder without a manifest."""
    if checkpoint.is_local:
        if not os.path.exists(os.path.join(checkpoint.path, contract.CHECKPOINT_MANIFEST)):
            return {}
    elif not is_remote(checkpoint.path):
        return {}
    from kubetune.storage.checkpoints import open_checkpoint

    info = open_checkpoint(checkpoint.path, endpoint_url=checkpoint.endpoint_url)
    return {**info.metrics, TRAINING_ITERATION: info.iteration}


def restore_target(
    checkpoint_path: str | os.PathLike[str] | Checkpoint | TrainingResult,
) -> tuple[Checkpoint | None, dict[str, Any]]:
    """(the checkpoint, the metrics its counters come from) of what restore() was
    given: the result of save(), a Checkpoint or a path."""
    if isinstance(checkpoint_path, TrainingResult):
        return checkpoint_path.checkpoint, checkpoint_path.metrics
    if isinstance(checkpoint_path, Checkpoint):
        return checkpoint_path, manifest_metrics(checkpoint_path)
    if isinstance(checkpoint_path, str | os.PathLike):
        checkpoint = Checkpoint(checkpoint_path)
        return checkpoint, manifest_metrics(checkpoint)
    raise TypeError(
        f"restore() takes a path, a Checkpoint or the result of save(), "
        f"not {describe(checkpoint_path)}"
    )


def load_saved(checkpoint: Checkpoint, load_checkpoint: Callable[[Any], None]) -> None:
    """Hand load_checkpoint the dict save_checkpoint() returned, or the folder."""
    with checkpoint.as_directory() as folder:
        pickled = os.path.join(folder, DICT_CHECKPOINT_FILE)
        if os.path.exists(pickled):
            with open(pickled, "rb") as f:
                load_checkpoint(cloudpickle.load(f))
        else:
            load_checkpoint(folder)
