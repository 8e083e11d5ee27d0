"""Which device the PyTorch example trains on, decided without importing torch:
a job that asked Kubernetes for `nvidia.com/gpu` must train on CUDA or fail
loudly, never fall back to the CPU and quietly take hours longer.

The GPUs a container was given are read from what the NVIDIA device plugin
sets (the local cluster's node agent sets the same): `NVIDIA_VISIBLE_DEVICES`
holds their ids with the plugin's default `envvar` strategy, or names the
folder whose file names are the ids with its `volume-mounts` strategy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

VISIBLE_DEVICES_ENV = "NVIDIA_VISIBLE_DEVICES"
# With deviceListStrategy=volume-mounts the plugin sets the variable to this
# folder and mounts one empty file per allocated GPU, named by its id.
DEVICE_LIST_DIR = "/var/run/nvidia-container-devices"
# Values that do not name allocated devices: "all" is what CUDA base images
# set by default (so a pod that asked for no GPU carries it too), "void" and
# "none" are the container toolkit's "no GPU".
_NOT_ALLOCATED = frozenset({"", "all", "void", "none"})
DEVICES = ("auto", "cpu", "cuda")


class DeviceError(RuntimeError):
    """The job asked for a device this process cannot use."""


def allocated_gpus(environ: Mapping[str, str], device_files: Iterable[str] = ()) -> list[str]:
    """The GPU ids the device plugin allocated to this container (empty: none).

    device_files: the names in DEVICE_LIST_DIR, read by the caller only when
    the variable points there.
    """
    value = environ.get(VISIBLE_DEVICES_ENV, "").strip()
    if value == DEVICE_LIST_DIR:
        return sorted(name for name in device_files if not name.startswith("."))
    if value.lower() in _NOT_ALLOCATED:
        return []
    return [gpu.strip() for gpu in value.split(",") if gpu.strip()]


def choose_device(
    requested: str,
    gpus: Sequence[str],
    cuda_available: bool,
    torch_version: str,
    torch_cuda_version: str | None,
) -> str:
    """ "cuda" or "cpu" for config `device` (auto, cpu, cuda) and the allocated GPUs.

    auto trains on CUDA exactly when the pod was given GPUs; cuda insists on it
    (e.g. a local run on a workstation); cpu never uses one. Wanting CUDA where
    torch cannot use it raises DeviceError saying why and what to change.
    """
    if requested not in DEVICES:
        raise DeviceError(
            f"config device={requested!r} is not one of {', '.join(DEVICES)}: "
            "use auto (CUDA when the job requests nvidia.com/gpu), cpu or cuda"
        )
    if requested == "cpu" or (requested == "auto" and not gpus):
        return "cpu"
    if cuda_available:
        return "cuda"
    if gpus:
        why = f"the pod was given GPU {','.join(gpus)} ({VISIBLE_DEVICES_ENV}) but "
    else:
        why = "config device='cuda' but "
    if torch_cuda_version is None:
        why += f"torch {torch_version} is a CPU-only build"
        fix = "run an image whose torch is a CUDA build (docs/gpu.md)"
    else:
        why += (
            f"torch {torch_version} (built for CUDA {torch_cuda_version}) finds no usable GPU: "
            "no NVIDIA driver in the container, or one too old for that CUDA"
        )
        fix = "check `nvidia-smi` in the pod and the node's driver version (docs/gpu.md)"
    raise DeviceError(
        f"{why}. Refusing to train on CPU instead: {fix}, or remove the "
        "nvidia.com/gpu request (or set config device: cpu) to train on CPU."
    )
