"""A small real PyTorch model on synthetic data as a kubetune Trainable, written
so that a suspended and resumed job reports exactly the losses an
uninterrupted one does: the checkpoint holds the model's and the optimizer's
`state_dict`, the learning-rate schedule, the data stream's position and every
random generator the training draws from.

    kubetune run examples.pytorch.trainable:TorchTrainable --stop training_iteration=50 \
        --checkpoint-frequency 10

On a cluster: examples/pytorch/job.yaml. GPUs: docs/gpu.md.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

import kubetune as tune
from examples.pytorch.device import DEVICE_LIST_DIR, allocated_gpus, choose_device

CHECKPOINT_FILE = "state.pt"
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "features": 32,
    "classes": 4,
    "hidden": 128,
    "dropout": 0.1,
    "batch_size": 256,
    "steps_per_iteration": 10,
    "lr": 3e-3,
    "lr_step": 50,  # iterations between halvings of the learning rate
    "device": "auto",  # auto: CUDA when the job requests nvidia.com/gpu (device.py)
    "num_threads": 0,  # torch's intra-op threads; 0 keeps torch's default
}


def pick_device(requested: str) -> torch.device:
    """The device config `device` and the pod's allocated GPUs call for."""
    listed = os.listdir(DEVICE_LIST_DIR) if os.path.isdir(DEVICE_LIST_DIR) else []
    name = choose_device(
        requested,
        allocated_gpus(os.environ, listed),
        torch.cuda.is_available(),
        torch.__version__,
        torch.version.cuda,
    )
    return torch.device(name)


class SyntheticData:
    """An endless stream of labelled batches from a fixed random teacher, drawn
    from its own generator on the CPU, so the stream is the same on any device
    and its position is one generator state."""

    def __init__(self, seed: int, features: int, classes: int, batch_size: int) -> None:
        self.features = features
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.teacher = torch.randn(classes, features, generator=self.generator)
        self.batches = 0
        # A fixed held-out batch, from a generator of its own so the stream's
        # position does not depend on when it was drawn.
        held_out = torch.Generator().manual_seed(seed + 1)
        self.eval_x, self.eval_y = self._labelled(4 * batch_size, held_out)

    def _labelled(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, self.features, generator=generator)
        noise = 0.5 * torch.randn(n, self.teacher.shape[0], generator=generator)
        return x, (x @ self.teacher.T + noise).argmax(dim=1)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.batches += 1
        return self._labelled(self.batch_size, self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.batches = int(state["batches"])


def build_model(config: dict[str, Any]) -> nn.Module:
    return nn.Sequential(
        nn.Linear(config["features"], config["hidden"]),
        nn.ReLU(),
        nn.Dropout(config["dropout"]),  # draws from torch's global generator
        nn.Linear(config["hidden"], config["hidden"]),
        nn.ReLU(),
        nn.Linear(config["hidden"], config["classes"]),
    )


def capture_rng_state(device: torch.device) -> dict[str, Any]:
    """Every global generator training may draw from. numpy's is left out: the
    example does not use it (code that does should add np.random.get_state())."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    # A CPU checkpoint restored on CUDA keeps the freshly seeded CUDA generator.
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class Training:
    """The model, its optimizer and schedule, and the data, built the same way
    (same seeds, same order) by the Trainable and by a plain loop
    (bench_gpu.py), so both produce the same floats."""

    def __init__(self, cfg: dict[str, Any], device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        if cfg["num_threads"]:
            torch.set_num_threads(int(cfg["num_threads"]))
        seed = int(cfg["seed"])
        torch.manual_seed(seed)  # also seeds CUDA
        random.seed(seed)
        self.data = SyntheticData(seed, cfg["features"], cfg["classes"], cfg["batch_size"])
        self.eval_x = self.data.eval_x.to(device)
        self.eval_y = self.data.eval_y.to(device)
        self.model = build_model(cfg).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg["lr"])
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=cfg["lr_step"], gamma=0.5
        )
        self.loss_fn = nn.CrossEntropyLoss()

    def iteration(self) -> dict[str, Any]:
        """`steps_per_iteration` optimizer steps; their mean loss and the
        held-out accuracy after them."""
        steps = self.cfg["steps_per_iteration"]
        self.model.train()
        total = torch.zeros((), device=self.device)
        for _ in range(steps):
            x, y = self.data.next_batch()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(x), y)
            loss.backward()
            self.optimizer.step()
            total += loss.detach()
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.model.eval()
        with torch.no_grad():
            accuracy = (self.model(self.eval_x).argmax(dim=1) == self.eval_y).float().mean()
        return {
            # one host sync per iteration: .item() waits for the device
            "loss": (total / steps).item(),
            "accuracy": accuracy.item(),
            "lr": lr,
            "samples": self.data.batches * self.cfg["batch_size"],
            "device": self.device.type,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "data": self.data.state_dict(),
            "rng": capture_rng_state(self.device),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.data.load_state_dict(state["data"])
        restore_rng_state(state["rng"], self.device)


class TorchTrainable(tune.Trainable):
    """A 3-layer MLP classifier trained with Adam on SyntheticData (config:
    DEFAULTS); each iteration is `steps_per_iteration` optimizer steps,
    reporting their mean loss and the accuracy on a held-out batch."""

    def setup(self, config: dict[str, Any]) -> None:
        self.cfg = {**DEFAULTS, **config}
        self.device = pick_device(str(self.cfg["device"]))
        self.training = Training(self.cfg, self.device)

    def step(self) -> dict[str, Any]:
        return self.training.iteration()

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        torch.save(self.training.state_dict(), Path(checkpoint_dir) / CHECKPOINT_FILE)

    def load_checkpoint(self, checkpoint: dict[str, Any] | str) -> None:
        # save_checkpoint returns None, so what comes back is the folder.
        if not isinstance(checkpoint, str):
            raise TypeError(f"expected a checkpoint folder, got a {type(checkpoint).__name__}")
        # On the CPU first: RNG states must be CPU tensors; load_state_dict
        # copies weights and optimizer state onto the parameters' device.
        state = torch.load(
            Path(checkpoint) / CHECKPOINT_FILE, map_location="cpu", weights_only=True
        )
        self.training.load_state_dict(state)
