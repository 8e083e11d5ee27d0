"""`kubetune.testing.validate_save_restore`: Ray's check that a Trainable's
checkpoints round-trip, run in-process (no cluster, no storage)."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from kubetune.sdk.checkpoint_handle import Checkpoint, TrainingResult
from kubetune.sdk.trainable import Trainable


def validate_save_restore(
    trainable_cls: type[Trainable], config: dict[str, Any] | None = None, num_gpus: int = 0
) -> bool:
    """Train one instance 3 iterations, save, restore into a fresh instance from a
    *copy* of the checkpoint folder (catching absolute paths written into it),
    and check the restored one continues at iterations 4 and 5. Raises
    AssertionError naming what broke; returns True."""
    name = trainable_cls.__name__
    first = trainable_cls(config=dict(config or {}))
    second = trainable_cls(config=dict(config or {}))
    copy_dir = tempfile.mkdtemp(prefix="kubetune-validate-")
    try:
        result: dict[str, Any] = {}
        for _ in range(3):
            result = first.train()
        assert result.get("training_iteration"), (
            f"{name}: validation needs `training_iteration` in results"
        )
        saved = first.save()
        assert saved.checkpoint is not None, f"{name}.save() produced no checkpoint"
        moved = saved.checkpoint.to_directory(copy_dir)
        shutil.rmtree(saved.checkpoint.path, ignore_errors=True)
        second.restore(TrainingResult(Checkpoint.from_directory(moved), saved.metrics))
        result = second.train()
        assert result["training_iteration"] == 4, (
            f"{name}: after restoring iteration 3 the next result has training_iteration "
            f"{result['training_iteration']}, expected 4"
        )
        result = second.train()
        assert result["training_iteration"] == 5, (
            f"{name}: expected training_iteration 5, got {result['training_iteration']}"
        )
    finally:
        first.stop()
        second.stop()
        shutil.rmtree(copy_dir, ignore_errors=True)
    return True
