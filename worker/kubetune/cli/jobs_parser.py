"""The arguments of `kubetune`'s cluster commands (submit, get, describe, logs,
results, suspend, resume), kept apart from what the commands do
(kubetune.cli.jobs): one argparse subparser each, kubectl's flags (-n, -o,
--kubeconfig, --context) shared."""

from __future__ import annotations

import argparse
from typing import Any, cast

from kubetune.cli.args import add_checkpoint_options, add_repeatable
from kubetune.cli.jobs import (
    cmd_describe,
    cmd_get,
    cmd_logs,
    cmd_results,
    cmd_resume,
    cmd_submit,
    cmd_suspend,
)


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-n", "--namespace", metavar="NS", help="namespace (default: the kubeconfig context's)"
    )
    common.add_argument(
        "--kubeconfig", metavar="FILE", help="kubeconfig file (default: KUBECONFIG, ~/.kube/config)"
    )
    common.add_argument("--context", metavar="NAME", help="kubeconfig context to use")
    return common


def add_commands(sub: Any) -> None:
    """Registers the cluster commands on `kubetune`'s subparsers."""
    common = _connection_options()
    _add_submit(sub, common)

    p = sub.add_parser(
        "get",
        parents=[common],
        help="list TrainableJobs, or show one",
        description="A table like `kubectl get tj`: all jobs of the namespace, or NAME.",
    )
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("-o", "--output", choices=["json", "yaml", "wide", "name"])
    p.add_argument("-A", "--all-namespaces", action="store_true", help="jobs of every namespace")
    p.add_argument(
        "-w", "--watch", action="store_true", help="follow NAME until it ends (as submit --watch)"
    )
    p.set_defaults(handler=cmd_get)

    _on_one_job(
        sub, common, "describe", cmd_describe,
        help="show a TrainableJob in detail, with its recent events",
    )  # fmt: skip

    p = _on_one_job(
        sub, common, "logs", cmd_logs,
        help="print the worker's log lines, attempt after attempt",
        description="The worker container's log of each attempt (worker pod 1, 2, ...) in "
        "order; with -f, follows until the job has ended.",
    )  # fmt: skip
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")

    p = _on_one_job(
        sub, common, "results", cmd_results,
        help="print the rows of a job's result.json",
        description="Reads result.json from the job's S3 folder with this machine's AWS "
        "credentials (environment or profile).",
    )  # fmt: skip
    p.add_argument(
        "-o",
        "--output",
        choices=["table", "json", "csv"],
        default="table",
        help="table: training_iteration and the numeric metrics; json: one object a line; "
        "csv: every key",
    )
    p.add_argument(
        "--endpoint-url", metavar="URL", help="S3 endpoint from here (default: the job's own)"
    )

    for verb, until, what in (
        ("suspend", "Suspended", "checkpoint the job and stop its worker (nothing is lost)"),
        ("resume", "Running", "start a suspended job again from its checkpoint"),
    ):
        handler = cmd_suspend if verb == "suspend" else cmd_resume
        p = _on_one_job(
            sub, common, verb, handler, help=what, description=what[0].upper() + what[1:] + "."
        )
        p.add_argument("--wait", action="store_true", help=f"return once the job is {until}")
        p.add_argument(
            "--timeout", type=float, metavar="SECONDS", help="with --wait: give up after this long"
        )


def _on_one_job(
    sub: Any, common: argparse.ArgumentParser, verb: str, handler: Any, **texts: str
) -> argparse.ArgumentParser:
    """A command acting on the one TrainableJob its NAME argument names."""
    p = sub.add_parser(verb, parents=[common], **texts)
    p.add_argument("name", metavar="NAME")
    p.set_defaults(handler=handler)
    return cast(argparse.ArgumentParser, p)


def _add_submit(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "submit",
        parents=[common],
        help="create a TrainableJob running MODULE:ATTR on the cluster",
        description="Create a TrainableJob running MODULE:ATTR in a worker pod. MODULE:ATTR is "
        "named in spec.trainable, not shipped: the worker image must be able to import it "
        "(a file given on the command line is one the image has by definition; to run a "
        "class from a notebook or a local script, use kubetune.submit() from Python, which "
        "ships it). Put MODULE:ATTR first: a flag taking several values (--config, --stop, "
        "--resources, --label) would take it as one of its own.",
    )
    p.add_argument("trainable", metavar="MODULE:ATTR", help="e.g. examples.mnist:MNISTTrainable")
    p.add_argument(
        "--storage",
        required=True,
        metavar="s3://BUCKET/PREFIX",
        help="results and checkpoints go to <storage>/<namespace>/<name>/",
    )
    p.add_argument("--name", help="the job's name (default: ATTR and a random suffix)")
    add_repeatable(
        p,
        "--config",
        "KEY=VALUE",
        "config entry (VALUE as JSON when it parses, else a string), or a JSON object, "
        "or @FILE holding one",
    )
    add_repeatable(p, "--stop", "KEY=VALUE", "stop once result[KEY] >= VALUE (any criterion)")
    add_checkpoint_options(p, local=False)
    p.add_argument("--gpus", type=int, metavar="N", help="GPUs for the worker (nvidia.com/gpu)")
    add_repeatable(
        p,
        "--resources",
        "KEY=QUANTITY",
        "the worker container's limits, e.g. cpu=4 memory=16Gi nvidia.com/gpu=1",
    )
    p.add_argument("--image", metavar="IMAGE", help="worker image (default: the operator's)")
    p.add_argument(
        "--endpoint-url", metavar="URL", help="the S3 endpoint the worker uses (MinIO, Ceph ...)"
    )
    p.add_argument(
        "--storage-secret", metavar="NAME", help="Secret with the worker's S3 credentials"
    )
    add_repeatable(p, "--label", "KEY=VALUE", "label of the TrainableJob")
    p.add_argument(
        "--max-failures", type=int, metavar="N", help="restarts from the latest checkpoint"
    )
    p.add_argument("--restore-from", metavar="URI", help="checkpoint folder to start from")
    p.add_argument("--suspend", action="store_true", help="create it suspended")
    p.add_argument("-o", "--output", choices=["json", "yaml", "name"])
    p.add_argument(
        "-w", "--watch", action="store_true", help="follow the job until it ends (exit 1: Failed)"
    )
    p.set_defaults(handler=cmd_submit)
