"""`kubetune-worker`: the worker pod's entry point. Reads the job from
protocol.WORKER_SPEC_ENV, claims the run folder, runs the loop and exits with
protocol's codes, leaving its one-line reason in the termination message."""

from __future__ import annotations

import os
import sys

from kubetune import protocol
from kubetune.api import run
from kubetune.display import PlainLines
from kubetune.entry import exit_at_once, finish, setup_logging
from kubetune.errors import KubetuneError, one_line
from kubetune.loader import add_cwd_to_path, load_trainable
from kubetune.signals import StopSignals
from kubetune.tracebacks import format_user_traceback


def read_spec(environ: dict[str, str] | None = None) -> protocol.WorkerSpec:
    """The WorkerSpec, or ValueError naming what is wrong with it."""
    try:
        spec = protocol.WorkerSpec.from_env(environ)
    except TypeError as exc:  # unknown or missing fields
        raise ValueError(f"{protocol.WORKER_SPEC_ENV} does not match WorkerSpec: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{protocol.WORKER_SPEC_ENV} is not a valid spec: {exc}") from None
    if not spec.trainable or not spec.run_uri:
        raise ValueError(f"{protocol.WORKER_SPEC_ENV} needs trainable and run_uri")
    for name in ("config", "stop", "checkpoint"):
        if not isinstance(getattr(spec, name), dict):
            raise ValueError(f"{protocol.WORKER_SPEC_ENV}: {name} must be a JSON object")
    return spec


def main() -> int:
    setup_logging()
    add_cwd_to_path()
    try:
        spec = read_spec()
    except ValueError as exc:
        return finish(protocol.EXIT_USAGE, str(exc))
    endpoint = spec.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    name = spec.run_uri.rstrip("/").rsplit("/", 1)[-1]
    print(
        f"[kubetune] worker for run {spec.run_id}: {spec.trainable} -> {spec.run_uri}", flush=True
    )
    try:
        result = run(
            load_trainable(spec.trainable),
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
    except Exception as exc:  # a kubetune bug: show where
        sys.stderr.write(format_user_traceback(exc, keep_all=True))
        return finish(protocol.EXIT_TRAINABLE_ERROR, f"internal error: {one_line(exc)}")
    return finish(result.exit_code, result.message)


if __name__ == "__main__":
    sys.exit(main())
