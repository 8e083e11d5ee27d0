"""The PyTorch example's device rule (pure, no torch needed) and, where torch is
installed, that its checkpoint continues training exactly."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # examples/ lives at the repo root, outside the package dirs
    sys.path.insert(0, str(REPO))

from examples.pytorch.device import (  # noqa: E402
    DEVICE_LIST_DIR,
    DeviceError,
    allocated_gpus,
    choose_device,
)


@pytest.mark.parametrize(
    ("env", "files", "expected"),
    [
        ({}, [], []),
        ({"NVIDIA_VISIBLE_DEVICES": ""}, [], []),
        ({"NVIDIA_VISIBLE_DEVICES": "all"}, [], []),
        ({"NVIDIA_VISIBLE_DEVICES": "void"}, [], []),
        ({"NVIDIA_VISIBLE_DEVICES": "none"}, [], []),
        ({"NVIDIA_VISIBLE_DEVICES": "0"}, [], ["0"]),
        ({"NVIDIA_VISIBLE_DEVICES": "0, 1"}, [], ["0", "1"]),
        ({"NVIDIA_VISIBLE_DEVICES": "GPU-8f1c2e"}, [], ["GPU-8f1c2e"]),
        ({"NVIDIA_VISIBLE_DEVICES": DEVICE_LIST_DIR}, ["GPU-b", "GPU-a"], ["GPU-a", "GPU-b"]),
        ({"NVIDIA_VISIBLE_DEVICES": DEVICE_LIST_DIR}, [], []),
        # CUDA_VISIBLE_DEVICES alone says what CUDA may see, not what was allocated
        ({"CUDA_VISIBLE_DEVICES": "0"}, [], []),
    ],
    ids=[
        "unset",
        "empty",
        "all-from-cuda-image",
        "void",
        "none",
        "one-id",
        "two-ids",
        "uuid",
        "volume-mounts",
        "volume-mounts-empty",
        "cuda-visible-only",
    ],
)
def test_allocated_gpus(env: dict[str, str], files: list[str], expected: list[str]) -> None:
    assert allocated_gpus(env, files) == expected


@pytest.mark.parametrize(
    ("requested", "gpus", "cuda", "expected"),
    [
        ("auto", [], False, "cpu"),
        ("auto", [], True, "cpu"),  # no GPU requested: never take one
        ("auto", ["0"], True, "cuda"),
        ("cpu", ["0"], True, "cpu"),
        ("cuda", [], True, "cuda"),
    ],
    ids=["auto-no-gpu", "auto-cuda-but-not-requested", "auto-gpu", "cpu-wins", "cuda-forced"],
)
def test_choose_device(requested: str, gpus: list[str], cuda: bool, expected: str) -> None:
    assert choose_device(requested, gpus, cuda, "2.5.0", "12.4") == expected


def test_gpu_requested_but_cpu_only_torch_is_refused_with_the_fix() -> None:
    with pytest.raises(DeviceError) as err:
        choose_device("auto", ["1"], False, "2.5.0+cpu", None)
    msg = str(err.value)
    assert "given GPU 1 (NVIDIA_VISIBLE_DEVICES)" in msg
    assert "torch 2.5.0+cpu is a CPU-only build" in msg
    assert "Refusing to train on CPU" in msg and "device: cpu" in msg


def test_gpu_requested_but_no_driver_names_the_cuda_build() -> None:
    with pytest.raises(DeviceError, match=r"built for CUDA 12\.4\) finds no usable GPU"):
        choose_device("cuda", [], False, "2.5.0", "12.4")


def test_unknown_device_names_the_choices() -> None:
    with pytest.raises(DeviceError, match="device='gpu' is not one of auto, cpu, cuda"):
        choose_device("gpu", [], True, "2.5.0", "12.4")


# --- with torch installed --------------------------------------------------------

NO_TORCH = "the PyTorch example needs torch: pip install -e '.[examples]'"
# Small and single-threaded: a few milliseconds per iteration, same floats every run.
SMALL = {"hidden": 32, "batch_size": 64, "steps_per_iteration": 3, "num_threads": 1}


def _losses(trainable: Any, n: int) -> list[float]:
    return [trainable.train()["loss"] for _ in range(n)]


def test_restore_continues_the_losses_exactly(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason=NO_TORCH)
    from examples.pytorch.trainable import TorchTrainable

    reference = TorchTrainable(config=SMALL)
    expected = _losses(reference, 6)
    reference.stop()

    first = TorchTrainable(config=SMALL)
    before = _losses(first, 3)
    saved = first.save(str(tmp_path / "ckpt"))
    _losses(first, 2)  # moves every generator on, so a restore that missed one would show
    first.stop()
    resumed = TorchTrainable(config=SMALL)
    resumed.restore(saved)
    after = _losses(resumed, 3)
    resumed.stop()

    assert before + after == expected
    assert resumed.iteration == 6


def test_without_dropout_rng_state_the_losses_would_differ(tmp_path: Path) -> None:
    """The exactness above depends on the RNG state in the checkpoint: a restore
    that skips it reports other losses (so the check above can fail)."""
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    from examples.pytorch.trainable import TorchTrainable

    reference = TorchTrainable(config=SMALL)
    expected = _losses(reference, 4)
    first = TorchTrainable(config=SMALL)
    _losses(first, 2)
    saved = first.save(str(tmp_path / "ckpt"))
    resumed = TorchTrainable(config=SMALL)
    resumed.restore(saved)
    torch.manual_seed(12345)  # the dropout masks now come from elsewhere
    assert _losses(resumed, 2) != expected[2:]


def test_gpu_request_without_cuda_fails_in_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    from examples.pytorch.trainable import TorchTrainable

    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="given GPU 0"):
        TorchTrainable(config=SMALL)
