"""The `kubetune` command line. `kubetune run MODULE:ATTR ...`: the worker's
loop on this machine, with a live progress line, exiting with protocol's codes
and one clear line. The cluster commands (submit, get, describe, logs,
results, suspend, resume) live in kubetune.cli.jobs."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

import kubetune_contract as contract
from kubetune.cli import jobs as cli_jobs
from kubetune.cli.args import add_checkpoint_options, add_repeatable, parse_config
from kubetune.cli.jobs_parser import add_commands
from kubetune.runtime.api import DEFAULT_STORAGE_ROOT, run
from kubetune.runtime.display import make_reporter
from kubetune.runtime.exiting import exit_at_once, finish, setup_logging
from kubetune.runtime.loader import add_cwd_to_path, load_trainable
from kubetune.runtime.signals import StopSignals
from kubetune.runtime.tracebacks import format_user_traceback
from kubetune.sdk.errors import InvalidSettings, KubetuneError, one_line
from kubetune.sdk.stopping import parse_stop_args


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise InvalidSettings(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kubetune", description="Run Ray-Tune-style trainables.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    p = sub.add_parser(
        "run",
        help="run a trainable locally, as a worker pod would",
        description="Run MODULE:ATTR (a kubetune.Trainable subclass or a training function) "
        "to its stop criterion, writing results and checkpoints to --storage.",
    )
    p.add_argument("trainable", metavar="MODULE:ATTR")
    p.add_argument("--config", default="{}", help="JSON object, or @FILE holding one")
    add_repeatable(p, "--stop", "KEY=VALUE", "stop once result[KEY] >= VALUE (any criterion)")
    p.add_argument(
        "--storage", help=f"run folder: a path or s3://... (default ./{DEFAULT_STORAGE_ROOT}/ATTR)"
    )
    p.add_argument("--name", help="run name (default: ATTR)")
    add_checkpoint_options(p, local=True)
    p.add_argument("--restore-from", metavar="URI", help="checkpoint folder to start from")
    p.add_argument(
        "--max-failures", type=int, default=0, metavar="N", help="retries on error (-1 = unlimited)"
    )
    p.add_argument("--endpoint-url", metavar="URL", help="S3 endpoint (default: AWS_ENDPOINT_URL)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    add_commands(sub)
    return parser


def _run(args: argparse.Namespace) -> int:
    config = parse_config(args.config)
    stop = parse_stop_args(args.stop)
    checkpoint = {
        "checkpoint_frequency": args.checkpoint_frequency,
        "checkpoint_at_end": args.checkpoint_at_end,
        "num_to_keep": args.num_to_keep,
        "checkpoint_score_attribute": args.score_attribute,
        "checkpoint_score_order": args.score_order,
    }
    add_cwd_to_path()
    trainable = load_trainable(args.trainable)
    name = args.name or args.trainable.partition(":")[2].split(".")[-1]
    result = run(
        trainable,
        config=config,
        stop=stop or None,
        storage=args.storage,
        checkpoint=checkpoint,
        restore_from=args.restore_from,
        max_failures=args.max_failures,
        name=name,
        endpoint_url=args.endpoint_url,
        raise_on_failure=False,
        reporter=make_reporter(0 if args.quiet else 1),
        signals=StopSignals(on_second=exit_at_once),
    )
    return finish(result.exit_code, result.message)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except InvalidSettings as exc:
        if _command_of(argv) in cli_jobs.COMMANDS:  # kubectl's form for the cluster commands
            return cli_jobs.fail(f"error: {exc}", exc.exit_code)
        return finish(exc.exit_code, str(exc))
    try:
        if args.command in cli_jobs.COMMANDS:
            return cli_jobs.run_command(args)
        if args.command != "run":
            parser.print_help(sys.stderr)
            return contract.EXIT_USAGE
        return _run(args)
    except KubetuneError as exc:
        return finish(exc.exit_code, str(exc))
    except KeyboardInterrupt:
        return finish(contract.EXIT_STOP_UNSAVED, "interrupted")
    except Exception as exc:  # a kubetune bug: show where
        sys.stderr.write(format_user_traceback(exc, keep_all=True))
        return finish(contract.EXIT_TRAINABLE_ERROR, f"internal error: {one_line(exc)}")


def _command_of(argv: list[str] | None) -> str | None:
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    return words[0] if words else None


if __name__ == "__main__":
    sys.exit(main())
