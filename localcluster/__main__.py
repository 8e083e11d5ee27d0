"""Command line of the local cluster: `python -m localcluster up|down|status`,
`python -m localcluster kwok up|down|status` for the fake kwok nodes and
`python -m localcluster kueue up|down|status` for Kueue."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from localcluster.config import DEFAULT_NODES, Layout, parse_nodes


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["kwok"]:  # the scale benchmark's fake nodes (addons/kwok.py)
        from localcluster.addons import kwok

        return kwok.main(argv[1:])
    if argv[:1] == ["kueue"]:  # Kueue as a host process (addons/kueue.py)
        from localcluster.addons import kueue

        return kueue.main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m localcluster",
        description="A real local Kubernetes cluster for the tests and the demo.",
    )
    parser.add_argument("command", choices=["up", "down", "status", "kwok", "kueue"])
    parser.add_argument(
        "--nodes",
        default=os.environ.get("KUBETUNE_NODES", DEFAULT_NODES),
        help=f"NAME=GPUS,... (default {DEFAULT_NODES!r}, or $KUBETUNE_NODES)",
    )
    args = parser.parse_args(argv)
    if importlib.util.find_spec("kubernetes") is None:  # the node agent needs it
        print(
            "error: the `kubernetes` package is missing: run this with the project's "
            ".venv (make venv), e.g. .venv/bin/python -m localcluster up",
            file=sys.stderr,
        )
        return 2
    from localcluster import cluster
    from localcluster.artifacts import SetupError

    try:
        lay = Layout.discover()
        if args.command == "up":
            return cluster.up(lay, parse_nodes(args.nodes))
        if args.command == "down":
            return cluster.down(lay)
        return cluster.status(lay)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print("interrupted: run `make cluster-down` to clean up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
