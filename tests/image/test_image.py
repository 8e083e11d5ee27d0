"""The built image, run for real with buildah: its commands start, it runs as
the numeric non-root user with no compilers or caches inside, and the example
trainable runs in it to its stop with checkpoints on a mounted host folder.

The image comes from `hack/image.sh build` (what `make image` runs): cached,
so this costs well under a second when the image is up to date. Needs root and
buildah, as building the image does.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGE_SH = REPO / "hack" / "image.sh"
USER_ID = 10001  # the Dockerfile's user: numeric, so the chart's runAsNonRoot can verify it

# The first test's setup builds the image when it is missing or stale (a few
# minutes cold): more than the suite's default per-test timeout.
pytestmark = pytest.mark.timeout(1800)


def buildah(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """buildah on the project's image storage (the one `make image` builds into)."""
    return subprocess.run(
        ["bash", str(IMAGE_SH), "buildah", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def image() -> str:
    proc = subprocess.run(
        ["bash", str(IMAGE_SH), "build"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"`hack/image.sh build` failed:\n{proc.stderr[-4000:]}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[str]:
    """One working container for the module: with vfs each one is a full copy."""
    name = f"kubetune-image-test-{uuid.uuid4().hex[:8]}"
    proc = buildah("from", "--pull=never", "--name", name, image)
    assert proc.returncode == 0, proc.stderr
    yield name
    buildah("rm", name)


def run_in(
    container: str, *cmd: str, volume: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run cmd in the container as the image runs it (its user, workdir, env)."""
    mount = ["--volume", volume] if volume else []
    return buildah("run", "--isolation", "chroot", *mount, container, "--", *cmd, timeout=timeout)


def test_the_operator_command_starts(container: str) -> None:
    proc = run_in(container, "kubetune-operator", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: kubetune-operator")


def test_the_cli_and_the_worker_are_on_path(container: str) -> None:
    proc = run_in(container, "kubetune", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: kubetune" in proc.stdout
    # The worker takes its job from the pod's environment, so without one it must
    # stop with the protocol's usage exit code and say what is missing.
    proc = run_in(container, "kubetune-worker")
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.strip(), "the worker exited without saying why"


def test_the_image_runs_as_the_numeric_non_root_user(image: str, container: str) -> None:
    proc = buildah("inspect", "--type", "image", "--format", "{{.OCIv1.Config.User}}", image)
    assert proc.stdout.strip() == str(USER_ID)
    proc = run_in(container, "id", "-u")
    assert proc.stdout.strip() == str(USER_ID)


def test_the_user_cannot_change_kubetune_or_the_examples(container: str) -> None:
    paths = "/opt/kubetune/bin /opt/kubetune/lib /app /app/examples"
    proc = run_in(container, "sh", "-c", f"for p in {paths}; do test -w $p && echo $p; done")
    assert proc.stdout.split() == [], "writable by the image's user"
    # ... while its home, where the worker stages checkpoints, is its own.
    assert run_in(container, "sh", "-c", "test -w $HOME").returncode == 0


def test_the_final_stage_holds_no_compilers_caches_or_build_inputs(container: str) -> None:
    # The build's pip settings are mounted, never copied: no file of them, not
    # even an empty mount point, may be left in a layer.
    script = (
        "for tool in gcc cc c++ make; do command -v $tool; done; "
        "ls -A /var/lib/apt/lists /var/cache/apt /mnt /home/kubetune/.cache /root/.cache; "
        "ls -d /src; find / -xdev \\( -name pip.conf -o -name ca.crt \\) -print"
    )
    proc = run_in(container, "sh", "-c", script)
    found = [line for line in proc.stdout.splitlines() if line and not line.endswith(":")]
    assert found == [], f"the image holds what the build stage should have kept: {found}"
    # pip stays, for images built FROM this one to add their dependencies to the venv.
    proc = run_in(container, "pip", "--version")
    assert proc.returncode == 0 and "/opt/kubetune/" in proc.stdout, proc.stdout + proc.stderr


def test_the_example_trainable_runs_to_its_stop_with_checkpoints(
    container: str, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    os.chown(results, USER_ID, USER_ID)  # the image's user writes the mounted folder
    proc = run_in(
        container,
        "kubetune",
        "run",
        "examples.ray_class_trainable:MyTrainable",
        "--stop",
        "training_iteration=6",
        "--checkpoint-frequency",
        "3",
        "--config",
        '{"step_seconds": 0.01}',
        "--storage",
        "/results/example",
        "--quiet",
        volume=f"{results}:/results",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = results / "example"
    checkpoints = sorted(p.name for p in run_dir.glob("checkpoint_*"))
    assert checkpoints == ["checkpoint_000003", "checkpoint_000006"]
    state = json.loads((run_dir / "checkpoint_000006" / "state.json").read_text())
    assert state == {"x": 6}
    rows = [json.loads(line) for line in (run_dir / "result.json").read_text().splitlines()]
    assert [row["training_iteration"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["done"] is True
