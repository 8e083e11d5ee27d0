"""`kubetune-operator`: the operator process (kopf); watches all namespaces unless told not to."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import kopf


def main(argv: list[str] | None = None) -> int:
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
    parser.add_argument(
        "--liveness",
        default=os.environ.get("KUBETUNE_LIVENESS", ""),
        help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz",
    )
    args = parser.parse_args(argv)
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
