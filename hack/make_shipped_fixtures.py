"""Regenerate tests/fixtures/shipped_0_1_0/: trainables shipped by value by the
0.1.0 release (the flat `kubetune` package, before kubetune.sdk / kubetune.runtime
/ kubetune.storage), pickled by that release's own `kubetune.shipping.pack`, the
function its `kubetune.submit(..., ship=True)` uploads the bytes of.

    mkdir -p /tmp/kt-old && git archive 783c678 | tar -x -C /tmp/kt-old
    .venv/bin/python hack/make_shipped_fixtures.py /tmp/kt-old --commit 783c678

The trainables are written in a `__main__` program (as in a notebook) run by this
interpreter with only the old checkout's worker/ first on sys.path, so `kubetune`
is the old release. tests/unit/test_shipped_compat.py loads them with the current
worker's load_shipped and runs them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "shipped_0_1_0"

# The notebook: run as __main__ under the old kubetune; argv[1] is the output folder.
NOTEBOOK = textwrap.dedent(
    '''
    import json
    import os
    import sys
    import tempfile

    import cloudpickle

    import kubetune
    import kubetune as tune
    import kubetune.policy  # reached as kubetune.policy.X below: a submodule by its old name
    from kubetune import errors as old_errors  # a module by its old name (RunFailed moved)
    from kubetune import result as result_keys  # a module by its old name
    from kubetune import shipping  # the old release's own pack (kubetune/shipping.py)
    from kubetune.checkpoint_dir import Checkpoint as OldCheckpoint
    from kubetune.function import get_checkpoint, report
    from kubetune.progress import encode_progress  # has no home in the new layout

    assert not hasattr(kubetune, "sdk"), f"not the old flat kubetune: {kubetune.__file__}"


    class Counter(tune.Trainable):
        """(1) A Trainable subclass; its base is kubetune.trainable.Trainable."""

        def setup(self, config, offset=0):
            self.value = config.get("start", 0) + offset
            self.step_size = config.get("step_size", 1)

        def step(self):
            self.value += self.step_size
            return {"value": self.value}

        def save_checkpoint(self, checkpoint_dir):
            with open(os.path.join(checkpoint_dir, "counter.json"), "w") as f:
                json.dump({"value": self.value}, f)

        def load_checkpoint(self, checkpoint):
            with open(os.path.join(checkpoint, "counter.json")) as f:
                self.value = json.load(f)["value"]


    def _restored_step(checkpoint):
        if checkpoint is None:
            return 0
        with checkpoint.as_directory() as folder:
            with open(os.path.join(folder, "state.json")) as f:
                return json.load(f)["step"] + 1


    def train_with_tune(config):
        """(2) A function using tune.report / tune.get_checkpoint (the module kubetune)."""
        for step in range(_restored_step(tune.get_checkpoint()), config.get("steps", 4)):
            with tempfile.TemporaryDirectory() as folder:
                with open(os.path.join(folder, "state.json"), "w") as f:
                    json.dump({"step": step}, f)
                tune.report(
                    {"score": step * config.get("scale", 1), "step": step},
                    checkpoint=tune.Checkpoint.from_directory(folder),
                )


    def train_old_paths(config):
        """(3) Names by their 0.1.0 module paths: functions and classes by reference
        (kubetune.function.report, kubetune.checkpoint_dir.Checkpoint), modules by
        cloudpickle's subimport (kubetune.result, kubetune.errors), and a submodule
        reached through the package (kubetune.policy)."""
        keep = kubetune.policy.CheckpointConfig(num_to_keep=2).num_to_keep
        if not issubclass(old_errors.RunFailed, old_errors.KubetuneError):
            raise AssertionError("kubetune.errors.RunFailed is not a KubetuneError")
        if result_keys.TRAINING_ITERATION != "training_iteration":
            raise AssertionError(result_keys.TRAINING_ITERATION)
        for step in range(_restored_step(get_checkpoint()), config.get("steps", 4)):
            with tempfile.TemporaryDirectory() as folder:
                with open(os.path.join(folder, "state.json"), "w") as f:
                    json.dump({"step": step}, f)
                checkpoint = OldCheckpoint.from_directory(folder)
                report({"score": 10 * step, "keep": keep}, checkpoint=checkpoint)


    def train_gone(config):
        """(5) Refers to kubetune.progress.encode_progress, which has no new home."""
        report({"size": len(encode_progress({"step": 1}))})


    FIXTURES = {
        "counter_class": (Counter, "Trainable subclass in __main__"),
        "report_function": (train_with_tune, "function: import kubetune as tune; tune.report"),
        "old_paths_function": (train_old_paths, "function: from kubetune.function import report"),
        "with_parameters_class": (
            tune.with_parameters(Counter, offset=100),
            "tune.with_parameters(Counter, offset=100): old kubetune.trainable code by value",
        ),
        "gone_name_function": (train_gone, "function: kubetune.progress.encode_progress (gone)"),
    }
    out = sys.argv[1]
    entries = {}
    for name, (obj, what) in FIXTURES.items():
        data = shipping.pack(obj)
        with open(os.path.join(out, name + ".pkl"), "wb") as f:
            f.write(data)
        entries[name + ".pkl"] = {"what": what, "sha256": shipping.digest(data)}

    # Every class and function each flat module defined: what a payload could name.
    import importlib
    import inspect
    import pkgutil

    defined = {}
    for info in pkgutil.iter_modules(kubetune.__path__):
        if not info.ispkg:
            module = importlib.import_module("kubetune." + info.name)
            defined[module.__name__] = sorted(
                key
                for key, value in vars(module).items()
                if (inspect.isclass(value) or inspect.isfunction(value))
                and value.__module__ == module.__name__
            )
    with open(os.path.join(out, "old_names.json"), "w") as f:
        json.dump(defined, f, indent=1, sort_keys=True)
        f.write("\\n")
    print(
        json.dumps(
            {
                "entries": entries,
                "python": shipping.python_version(),
                "kubetune": kubetune.__version__,
                "cloudpickle": cloudpickle.__version__,
            }
        )
    )
    '''
)


def commit_of(checkout: Path, given: str | None) -> str:
    if given:
        return given
    try:
        return subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (pass --commit)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old_checkout", type=Path, help="a checkout of the 0.1.0 release")
    parser.add_argument("--commit", help="the old checkout's commit, for the README")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    old_worker = (args.old_checkout / "worker").resolve()
    if not (old_worker / "kubetune" / "shipping.py").is_file():
        parser.error(f"{old_worker}/kubetune/shipping.py is missing: not a 0.1.0 checkout")
    args.out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(old_worker)
    with tempfile.TemporaryDirectory() as tmp:
        program = Path(tmp) / "notebook.py"
        program.write_text(NOTEBOOK)
        done = subprocess.run(
            [sys.executable, str(program), str(args.out.resolve())],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        return 1
    made = json.loads(done.stdout.strip().splitlines()[-1])
    for name, entry in made["entries"].items():
        data = (args.out / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
    made["commit"] = commit_of(args.old_checkout, args.commit)
    (args.out / "manifest.json").write_text(json.dumps(made, indent=2, sort_keys=True) + "\n")
    (args.out / "README.md").write_text(
        f"Trainables shipped by value by kubetune {made['kubetune']} (the flat package "
        f"layout, commit {made['commit']}), pickled by that release's kubetune.shipping.pack "
        f"on Python {made['python']} with cloudpickle {made['cloudpickle']}; regenerate with "
        "`.venv/bin/python hack/make_shipped_fixtures.py OLD_CHECKOUT --commit COMMIT`. "
        "tests/unit/test_shipped_compat.py loads and runs them; old_names.json lists the "
        "classes and functions each 0.1.0 module defined (what a payload could name).\n"
    )
    for name, entry in sorted(made["entries"].items()):
        print(f"{args.out / name}  {entry['sha256'][:12]}  {entry['what']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
