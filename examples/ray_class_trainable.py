"""A Ray Tune class trainable, written as Ray's docs write them. The only change
from Ray is the import line: `from ray import tune` became `import kubetune as tune`.

    kubetune run examples.ray_class_trainable:MyTrainable \
        --stop training_iteration=20 --checkpoint-frequency 5
"""

import json
import os
import time

import kubetune as tune  # was: from ray import tune


def objective(x, a, b):
    return a * (x**0.5) + b


class MyTrainable(tune.Trainable):
    def setup(self, config):
        # config (dict): A dict of hyperparameters
        self.x = 0
        self.a = config.get("a", 2)
        self.b = config.get("b", 4)
        self.step_seconds = config.get("step_seconds", 0.1)

    def step(self):  # This is called iteratively.
        time.sleep(self.step_seconds)  # stands in for real work, so progress is visible
        score = objective(self.x, self.a, self.b)
        self.x += 1
        return {"score": score}

    def save_checkpoint(self, checkpoint_dir):
        checkpoint_path = os.path.join(checkpoint_dir, "state.json")
        with open(checkpoint_path, "w") as f:
            json.dump({"x": self.x}, f)

    def load_checkpoint(self, checkpoint_dir):
        checkpoint_path = os.path.join(checkpoint_dir, "state.json")
        with open(checkpoint_path) as f:
            self.x = json.load(f)["x"]


if __name__ == "__main__":
    # Ray: tune.run(MyTrainable, config=..., stop=...) runs the same way here.
    result = tune.run(
        MyTrainable,
        config={"a": 2, "b": 4},
        stop={"training_iteration": 20},
        checkpoint={"frequency": 5},
    )
    print("final result:", result.metrics, "checkpoint:", result.checkpoint)
