"""`log_sys_usage`: a sampling thread that adds CPU, RAM and (with nvidia-ml-py
and a visible GPU) GPU utilisation to results under `perf`, like Ray's
UtilMonitor."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

import psutil


def _gpu_sampler() -> Any:
    """A callable returning {name: value} for every visible GPU, or None when
    nvidia-ml-py is missing or no GPU is visible (then only CPU/RAM are sampled)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no driver, no device: sample what we can
        return None
    if not handles:
        return None

    def sample() -> dict[str, float]:
        out: dict[str, float] = {}
        for i, handle in enumerate(handles):
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            # Fractions in [0, 1], as Ray's GPUtil-based monitor reports them.
            out[f"gpu_util_percent{i}"] = util.gpu / 100.0
            out[f"vram_util_percent{i}"] = mem.used / mem.total if mem.total else 0.0
        return out

    return sample


class UtilMonitor(threading.Thread):
    """Samples every `delay` seconds once started; get_data() returns the means since
    the previous call as {"perf": {...}}, or {} when the monitor is off."""

    def __init__(self, start: bool = True, delay: float = 0.7) -> None:
        super().__init__(name="kubetune-util-monitor", daemon=True)
        self.delay = delay
        self._samples: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._gpu = _gpu_sampler() if start else None
        self.started = False
        if start:
            psutil.cpu_percent(interval=None)  # the first call only primes the counter
            self.started = True
            super().start()

    def _sample(self) -> None:
        values = {
            "cpu_util_percent": float(psutil.cpu_percent(interval=None)),
            "ram_util_percent": float(psutil.virtual_memory().percent),
        }
        if self._gpu is not None:
            try:
                values.update(self._gpu())
            except Exception:  # a GPU that vanished must not stop training
                self._gpu = None
        with self._lock:
            for key, value in values.items():
                self._samples[key].append(value)

    def run(self) -> None:
        while not self._stopping.wait(self.delay):
            self._sample()

    def get_data(self) -> dict[str, Any]:
        if not self.started:
            return {}
        with self._lock:
            perf = {k: sum(v) / len(v) for k, v in self._samples.items() if v}
            self._samples.clear()
        return {"perf": perf}

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=2 * self.delay)
