"""A Ray Tune function trainable with checkpoints, written as Ray's docs write
them; only the import changed (`from ray import tune` -> `import kubetune as tune`).

    kubetune run examples.ray_function_trainable:train_func --stop training_iteration=30
"""

import json
import os
import tempfile
import time

import kubetune as tune  # was: from ray import tune


def train_func(config):
    lr = config.get("lr", 0.1)
    step_seconds = config.get("step_seconds", 0.05)
    start, loss = 0, 10.0

    # Continue where the last checkpoint left off (after a restart or a restore).
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as checkpoint_dir:
            with open(os.path.join(checkpoint_dir, "state.json")) as f:
                state = json.load(f)
            start, loss = state["step"] + 1, state["loss"]

    for step in range(start, config.get("steps", 100)):
        time.sleep(step_seconds)
        loss = loss * (1 - lr)
        metrics = {"loss": loss, "step": step}
        # Checkpoint every 5 steps, and at once when the run is asked to stop
        # (a kubetune extension; without it the last checkpoint is the latest multiple of 5).
        if step % 5 == 4 or tune.get_context().stop_requested():
            with tempfile.TemporaryDirectory() as tmp:
                with open(os.path.join(tmp, "state.json"), "w") as f:
                    json.dump({"step": step, "loss": loss}, f)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
        else:
            tune.report(metrics)


if __name__ == "__main__":
    result = tune.run(train_func, config={"lr": 0.1}, stop={"training_iteration": 30})
    print("final result:", result.metrics, "checkpoint:", result.checkpoint)
