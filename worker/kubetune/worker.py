"""`kubetune-worker`: the worker pod's entry point. Reads the job from
contract.WORKER_SPEC_ENV, claims the run folder, runs the loop and exits with
protocol's codes, leaving its one-line reason in the termination message."""

from __future__ import annotations

import os
import sys
from typing import Any

import kubetune_contract as contract
from kubetune.runtime.api import run
from kubetune.runtime.display import PlainLines
from kubetune.runtime.exiting import exit_at_once, finish, setup_logging
from kubetune.runtime.loader import add_cwd_to_path, load_trainable
from kubetune.runtime.shipping import load_shipped
from kubetune.runtime.signals import StopSignals
from kubetune.runtime.tracebacks import format_user_traceback
from kubetune.sdk.errors import KubetuneError, one_line
from kubetune.storage import StorageError, open_storage


def read_spec(environ: dict[str, str] | None = None) -> contract.WorkerSpec:
    """The WorkerSpec, or ValueError naming what is wrong with it."""
    try:
        spec = contract.WorkerSpec.from_env(environ)
    except TypeError as exc:  # unknown or missing fields
        raise ValueError(f"{contract.WORKER_SPEC_ENV} does not match WorkerSpec: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{contract.WORKER_SPEC_ENV} is not a valid spec: {exc}") from None
    if not spec.run_uri:
        raise ValueError(f"{contract.WORKER_SPEC_ENV} needs run_uri")
    if spec.code is None and not spec.trainable:
        raise ValueError(
            f"{contract.WORKER_SPEC_ENV} needs trainable (MODULE:ATTR) or code (shipped by value)"
        )
    if not isinstance(spec.trainable, str):
        raise ValueError(f"{contract.WORKER_SPEC_ENV}: trainable must be a string")
    if spec.code is not None and not isinstance(spec.code, dict):
        raise ValueError(f"{contract.WORKER_SPEC_ENV}: code must be a JSON object")
    for name in ("config", "stop", "checkpoint"):
        if not isinstance(getattr(spec, name), dict):
            raise ValueError(f"{contract.WORKER_SPEC_ENV}: {name} must be a JSON object")
    return spec


def load(spec: contract.WorkerSpec, endpoint: str | None) -> Any:
    """The trainable a spec names: shipped code (checked before it is unpickled)
    when spec.code is set, else MODULE:ATTR from the image."""
    if spec.code is None:
        return load_trainable(spec.trainable)
    return load_shipped(
        spec.code, spec.run_uri, lambda uri: open_storage(uri, endpoint_url=endpoint)
    )


def describe_trainable(spec: contract.WorkerSpec) -> str:
    """What the start line calls the trainable: MODULE:ATTR, or the shipped code's digest."""
    if spec.code is None:
        return spec.trainable
    sha = spec.code.get("sha256")
    short = sha[:12] if isinstance(sha, str) else "?"
    return f"{spec.trainable} (code sha256 {short})" if spec.trainable else f"code sha256 {short}"


def main() -> int:
    setup_logging()
    add_cwd_to_path()
    try:
        spec = read_spec()
    except ValueError as exc:
        return finish(contract.EXIT_USAGE, str(exc))
    endpoint = spec.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    name = spec.run_uri.rstrip("/").rsplit("/", 1)[-1]
    print(
        f"[kubetune] worker for run {spec.run_id}: {describe_trainable(spec)} -> {spec.run_uri}",
        flush=True,
    )
    try:
        result = run(
            load(spec, endpoint),
            config=spec.config,
            stop=spec.stop or None,
            storage=spec.run_uri,
            checkpoint=spec.checkpoint,
            restore_from=spec.restore_from,
            max_failures=spec.max_failures,
            name=name,
            endpoint_url=endpoint,
            run_id=spec.run_id,
            raise_on_failure=False,
            reporter=PlainLines(sys.stdout),
            signals=StopSignals(on_second=exit_at_once),
        )
    except KubetuneError as exc:
        return finish(exc.exit_code, str(exc))
    except StorageError as exc:  # reading shipped code; the loop maps its own
        return finish(contract.EXIT_STORAGE, str(exc))
    except Exception as exc:  # a kubetune bug: show where
        sys.stderr.write(format_user_traceback(exc, keep_all=True))
        return finish(contract.EXIT_TRAINABLE_ERROR, f"internal error: {one_line(exc)}")
    return finish(result.exit_code, result.message)


if __name__ == "__main__":
    sys.exit(main())
