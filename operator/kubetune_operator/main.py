"""`kubetune-operator`: the operator process (kopf); watches all namespaces unless told not to."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import sys

import kopf


def _fewer_malloc_arenas() -> None:
    """glibc gives each thread a malloc arena of its own (up to 8 per core);
    with the reconcile threads that fragments memory it never gives back.
    Two arenas keep the operator's memory flat (measured in performance.md)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX


def _from_env(
    parser: argparse.ArgumentParser, flag: str, env: str, default: str, help: str
) -> None:
    """A string flag whose default is read from `env` (then `default`)."""
    parser.add_argument(flag, default=os.environ.get(env, default), help=help)


def main(argv: list[str] | None = None) -> int:
    _fewer_malloc_arenas()
    parser = argparse.ArgumentParser(
        prog="kubetune-operator",
        description="Run TrainableJob resources as worker pods (kopf operator).",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; default: all, or $WATCH_NAMESPACE)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # The chart sets these through the environment; a flag given wins.
    _from_env(
        parser, "--liveness", "KUBETUNE_LIVENESS", "",
        "serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz",
    )  # fmt: skip
    _from_env(
        parser, "--progress-listen", "KUBETUNE_PROGRESS_LISTEN", "0.0.0.0:8470",
        "HOST:PORT where workers push progress (empty: workers are polled through S3)",
    )  # fmt: skip
    _from_env(
        parser, "--progress-url", "KUBETUNE_PROGRESS_URL", "",
        "the URL workers push progress to (default: http://127.0.0.1:PORT/v1alpha1/progress; "
        "in a cluster, the operator's Service)",
    )  # fmt: skip
    _from_env(
        parser, "--metrics-listen", "KUBETUNE_METRICS_LISTEN", "0.0.0.0:8471",
        "HOST:PORT serving Prometheus metrics at /metrics (empty: none)",
    )  # fmt: skip
    parser.add_argument(
        "--kueue",
        action="store_true",
        default=os.environ.get("KUBETUNE_KUEUE", "") in ("1", "true"),
        help="queue jobs labelled kueue.x-k8s.io/queue-name through Kueue (needs Kueue's "
        "CRDs; default: off, or $KUBETUNE_KUEUE=1)",
    )
    args = parser.parse_args(argv)
    if args.kueue:
        from kubetune_operator import kube, kueue

        if not kube.serves(kueue.GROUP, kueue.VERSION):
            print(
                "error: --kueue is set but the API server does not serve Kueue's Workload API "
                "(kueue.x-k8s.io/v1beta2): install Kueue (>= v0.15) first, or drop --kueue",
                file=sys.stderr,
            )
            return 2
    progress_url = args.progress_url
    if args.progress_listen and not progress_url:
        port = args.progress_listen.rpartition(":")[2]
        progress_url = f"http://127.0.0.1:{port}/v1alpha1/progress"
    # The handlers module reads its settings from the environment when imported.
    os.environ["KUBETUNE_PROGRESS_LISTEN"] = args.progress_listen
    os.environ["KUBETUNE_PROGRESS_URL"] = progress_url if args.progress_listen else ""
    os.environ["KUBETUNE_METRICS_LISTEN"] = args.metrics_listen
    os.environ["KUBETUNE_KUEUE"] = "1" if args.kueue else ""
    namespaces = args.namespace or [
        n for n in os.environ.get("WATCH_NAMESPACE", "").split(",") if n.strip()
    ]

    import kubetune_operator.handlers  # noqa: F401  (registers the handlers)

    # One operator runs many jobs: name the job on each of its log lines, as
    # `kopf run` does (kopf.configure alone leaves the prefix off).
    kopf.configure(verbose=args.verbose, log_prefix=True)
    # Even in verbose mode, the HTTP and AWS libraries' debug lines are noise.
    for noisy in ("urllib3", "botocore", "boto3", "s3transfer", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kopf logs each handled watch event ("Handler ... succeeded"): thousands of
    # lines a minute at scale, and nothing our own lines do not say better.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # One replica (Recreate) is the deployment model: kopf peering is not leader
    # election, so we run standalone rather than freeze beside a stray peer.
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
