"""A trainable that shows which GPUs it got (CUDA_VISIBLE_DEVICES, as the
device plugin sets it) and, when torch or nvidia-ml-py finds a GPU, does a
small real computation on it; without a GPU it runs the same loop on CPU.

    kubetune run examples.gpu_trainable:GPUTrainable --stop training_iteration=10
"""

from __future__ import annotations

import os
import time
from typing import Any

import kubetune as tune


def _torch_device() -> Any:
    try:
        import torch
    except ImportError:
        return None, None
    if torch.cuda.is_available():
        return torch, torch.device("cuda:0")
    return torch, None


def _nvml_names() -> list[str]:
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return names
    except Exception:  # no driver or no device: fall back to CPU
        return []


class GPUTrainable(tune.Trainable):
    def setup(self, config):
        self.size = int(config.get("size", 1024))
        self.visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        self.gpu_names = _nvml_names()
        self.torch, self.device = _torch_device()
        self.backend = "cuda" if self.device is not None else "cpu"
        if self.torch is not None:
            dev = self.device or "cpu"
            self.a = self.torch.randn(self.size, self.size, device=dev)
            self.b = self.torch.randn(self.size, self.size, device=dev)
        else:
            self.a = [[(i * j) % 7 / 7.0 for j in range(64)] for i in range(64)]

    def step(self):
        start = time.perf_counter()
        if self.torch is not None:
            c = self.a @ self.b
            checksum = float(c.abs().mean())  # .item() waits for the GPU
            flops = 2 * self.size**3
        else:
            m = self.a
            cols = list(zip(*m, strict=True))
            c = [[sum(x * y for x, y in zip(row, col, strict=True)) for col in cols] for row in m]
            checksum = sum(map(sum, c)) / (64 * 64)
            flops = 2 * 64**3
        seconds = time.perf_counter() - start
        return {
            "checksum": checksum,
            "gflops": flops / seconds / 1e9 if seconds > 0 else 0.0,
            "backend": self.backend,
            "cuda_visible_devices": self.visible,
            "gpus": ",".join(self.gpu_names),
        }

    def save_checkpoint(self, checkpoint_dir):
        return {"size": self.size}

    def load_checkpoint(self, checkpoint):
        self.size = checkpoint["size"]
