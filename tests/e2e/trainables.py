"""Trainables the end-to-end tests run inside worker pods (imported as
`tests.e2e.trainables:NAME` from the repository root, the pods' working dir)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import kubetune


class Counter(kubetune.Trainable):
    """Counts iterations; config: sleep (s per step), crash_at (raise once the
    iteration reaches it), fail_in_setup, payload_mb (checkpoint size), say
    (print `counter step N` at each step, for the log tests)."""

    def setup(self, config: dict[str, Any]) -> None:
        if config.get("fail_in_setup"):
            raise RuntimeError("setup failed on purpose: the dataset path /nope does not exist")
        self.sleep = float(config.get("sleep", 0.1))
        self.crash_at = int(config.get("crash_at", 0))
        self.payload = b"x" * int(float(config.get("payload_mb", 0)) * 1024 * 1024)
        self.total = 0
        self.say = bool(config.get("say"))

    def step(self) -> dict[str, Any]:
        time.sleep(self.sleep)
        self.total += 1
        if self.say:
            print(f"counter step {self.iteration + 1}", flush=True)
        if self.crash_at and self.iteration + 1 >= self.crash_at:
            raise RuntimeError(f"crash on purpose at iteration {self.iteration + 1}")
        return {
            "score": float(self.total),
            "reported_at": time.time(),
            "gpu_ids": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        }

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
        return {"total": self.total, "payload": self.payload}

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.total = checkpoint["total"]


class Scored(kubetune.Trainable):
    """A sweep's synthetic trainable: score = quality + iteration / 100, so the
    config decides the ranking; config: quality, sleep (s per step)."""

    def setup(self, config: dict[str, Any]) -> None:
        self.quality = float(config["quality"])
        self.sleep = float(config.get("sleep", 0.05))

    def step(self) -> dict[str, Any]:
        time.sleep(self.sleep)
        return {"score": self.quality + (self.iteration + 1) / 100}

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
        # Progress only: after a PBT exploit the explored config's quality applies.
        return {"trained": self.iteration}

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.restored_from = checkpoint["trained"]


def counting(config: dict[str, Any]) -> None:
    """A training function: reports `loss` forever (until a stop criterion or a
    signal ends it); config: sleep (s per report)."""
    sleep = float(config.get("sleep", 0.01))
    i = 0
    while True:
        i += 1
        time.sleep(sleep)
        kubetune.report({"loss": 1.0 / i})


class Echo(kubetune.Trainable):
    """Reports config["label"] back as a metric, for tests of what a config's
    values (Unicode, long strings) become in results and status."""

    def setup(self, config: dict[str, Any]) -> None:
        self.label = str(config.get("label", ""))

    def step(self) -> dict[str, Any]:
        time.sleep(0.05)
        return {"label": self.label, "score": float(self.iteration + 1)}

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
        return {"label": self.label}

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.label = checkpoint["label"]


class ShardedCounter(Counter):
    """Counter whose checkpoint is many files (config shards, payload_mb in all),
    as a sharded model's is: S3 shows its upload file by file while it runs, so
    a test can tell an upload under way and kill the worker in it."""

    def setup(self, config: dict[str, Any]) -> None:
        super().setup(config)
        self.shards = int(config.get("shards", 16))

    def save_checkpoint(self, checkpoint_dir: str) -> None:  # type: ignore[override]
        piece = self.payload[: len(self.payload) // self.shards]
        for i in range(self.shards):
            with open(os.path.join(checkpoint_dir, f"shard-{i:03d}.bin"), "wb") as fh:
                fh.write(piece)
        with open(os.path.join(checkpoint_dir, "state.json"), "w") as fh:
            json.dump({"total": self.total}, fh)

    def load_checkpoint(self, checkpoint: Any) -> None:
        with open(os.path.join(checkpoint, "state.json")) as fh:
            self.total = json.load(fh)["total"]
