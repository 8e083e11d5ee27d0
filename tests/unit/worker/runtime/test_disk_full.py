"""A full local disk while a checkpoint is written or fetched is named as such
(the folder, how full it is, the fix), never taken for a bug of the trainable or
a bad checkpoint, and the previous checkpoint stays complete."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

import kubetune
import kubetune_contract as contract
from kubetune.sdk.errors import disk_full_message, is_disk_full
from kubetune.storage import open_storage
from kubetune.storage.runfolder import RunStore


class _Wrapper(Exception):
    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def _raised_from(inner: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "full"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (OSError(errno.EACCES, "Permission denied"), False),
        (ValueError("no"), False),
        (_raised_from(OSError(errno.ENOSPC, "full"), RuntimeError("save failed")), True),
        (_Wrapper(OSError(errno.ENOSPC, "full")), True),
        (_raised_from(ValueError("x"), RuntimeError("y")), False),
    ],
    ids=["enospc", "edquot", "eacces", "other", "chained", "wrapped", "chained-other"],
)
def test_is_disk_full(exc: BaseException, full: bool) -> None:
    assert is_disk_full(exc) is full


def test_disk_full_message_names_the_folder_and_the_room() -> None:
    msg = disk_full_message("writing checkpoint 20 to", "/scratch/kubetune-save-x", 512, 16 << 20)
    assert msg.startswith(
        "No space left on device while writing checkpoint 20 to /scratch/kubetune-save-x "
        "(512 B free of 16.0 MiB): "
    )
    assert "ephemeral-storage" in msg and "TMPDIR" in msg


class FillsTheDisk(kubetune.Trainable):
    """Saves fine until iteration `full_at`, where the disk is full."""

    def setup(self, config: dict[str, Any]) -> None:
        self.full_at = int(config["full_at"])

    def step(self) -> dict[str, Any]:
        return {"score": float(self.iteration)}

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
        if self.iteration >= self.full_at:
            (Path(checkpoint_dir) / "weights.bin").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return {"at": self.iteration}

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        pass


def test_disk_full_while_saving_fails_clearly_and_keeps_the_previous_checkpoint(
    tmp_path: Path,
) -> None:
    result = kubetune.run(
        FillsTheDisk,
        config={"full_at": 10},
        stop={"training_iteration": 20},
        storage=str(tmp_path / "run"),
        checkpoint={"checkpoint_frequency": 5},
        raise_on_failure=False,
    )
    assert result.exit_code == contract.EXIT_DISK_FULL
    assert contract.EXIT_REASONS[result.exit_code] == "LocalDiskFull"
    assert contract.EXIT_DISK_FULL not in contract.HOPELESS_EXIT_CODES  # retried
    assert result.message.startswith("No space left on device while writing checkpoint 10 to ")
    assert "kubetune-save-" in result.message and "free of" in result.message
    store = RunStore(open_storage(str(tmp_path / "run")))
    assert [c.iteration for c in store.list_checkpoints()] == [5]
    assert result.checkpoint is not None and result.checkpoint.path.endswith("checkpoint_000005")
