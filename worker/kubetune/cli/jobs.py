"""The cluster commands of `kubetune`: submit, get, describe, logs, results,
suspend, resume. They follow kubectl's conventions (`-n`, `-o`,
`trainablejob.kubetune.io/NAME created`, `Error from server (NotFound): ...`)
and are thin: kubetune.cli.jobs_parser declares their arguments, the client
(kubetune.client) talks to the cluster, kubetune.cli.render (and
render_describe, render_results) says what to print, kubetune.cli.watch
follows a job.

Every failure ends as one line on stderr and a non-zero exit code: 1 for the
cluster's answers (not found, unreachable, refused, the job failed), 2 for bad
arguments."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TextIO, cast

import kubetune_contract as contract
from kubetune.cli.args import (
    check_trainable,
    parse_config_args,
    parse_pairs,
    parse_resources,
)
from kubetune.cli.render import (
    RESOURCE,
    RESOURCES,
    TERMINAL,
    checkpoint_iteration,
    outcome,
    phase_of,
    render_jobs,
)
from kubetune.cli.render_describe import render_describe
from kubetune.cli.render_results import (
    render_results_csv,
    render_results_json,
    render_results_table,
    result_rows,
)
from kubetune.cli.watch import JobDeleted, Watcher, is_live, job_updates
from kubetune.sdk.errors import InvalidSettings, KubetuneError
from kubetune.sdk.stopping import parse_stop_args
from kubetune_contract import API_GROUP, API_VERSION, PLURAL

COMMANDS = ("submit", "get", "describe", "logs", "results", "suspend", "resume")
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """Ends a command: `line` goes to stderr as it is."""

    def __init__(self, line: str, code: int = EXIT_FAILED) -> None:
        super().__init__(line)
        self.line = line
        self.code = code


def not_found_line(name: str) -> str:
    return f'Error from server (NotFound): {RESOURCES} "{name}" not found'


# running a command


def run_command(args: argparse.Namespace) -> int:
    """Runs the chosen command; every failure is one line on stderr."""
    from kubetune.client import ClusterError, JobFailed, NotFound, WaitTimeout
    from kubetune.storage import StorageError

    try:
        return int(args.handler(args))
    except CommandError as exc:
        return fail(exc.line, exc.code)
    except NotFound as exc:
        name = getattr(args, "name", None)
        return fail(not_found_line(name) if name else f"Error from server (NotFound): {exc}")
    except (JobFailed, WaitTimeout, ClusterError, StorageError) as exc:
        return fail(f"error: {exc}")
    except InvalidSettings as exc:
        return fail(f"error: {exc}", contract.EXIT_USAGE)
    except KubetuneError as exc:
        return fail(f"error: {exc}")
    except BrokenPipeError:  # `kubetune logs x | head`: the reader has gone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit fails no more
        return 0
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        line = unreachable_line(exc)
        if line is None:
            raise
        return fail(line)


def fail(line: str, code: int = EXIT_FAILED) -> int:
    sys.stdout.flush()
    print(" ".join(line.split()), file=sys.stderr, flush=True)
    return code


def unreachable_line(exc: BaseException) -> str | None:
    """urllib3's connection errors that reach the command line (a dropped
    watch): one line naming the API server, else None."""
    from urllib3.exceptions import HTTPError

    from kubetune.client.kube import unreachable

    return f"error: {unreachable(exc)}" if isinstance(exc, HTTPError) else None


def _connect(args: argparse.Namespace) -> tuple[Any, str]:
    from kubetune.client.kube import Kube

    kube = Kube.connect(args.kubeconfig, args.context)
    return kube, args.namespace or kube.namespace


def _job(args: argparse.Namespace, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """The handle of args.name and its body; NotFound as kubectl says it."""
    from kubetune.client import Job, NotFound

    kube, namespace = _connect(args)
    job = Job(args.name, namespace, kube=kube, **kwargs)
    try:
        return job, job.get()
    except NotFound:
        raise CommandError(not_found_line(args.name)) from None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _dump(obj: Any, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps(obj, indent=4) + "\n")
    else:
        import yaml

        out.write(yaml.safe_dump(obj, sort_keys=False))


def _as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def watch(kube: Any, namespace: str, name: str, first: dict[str, Any]) -> int:
    """Follows the job on stdout until it ends: 0 Succeeded, 1 Failed."""
    watcher = Watcher(sys.stdout, live=is_live(sys.stdout))
    try:
        return watcher.follow(job_updates(kube, namespace, name, first))
    except JobDeleted:
        raise CommandError(f"error: {RESOURCE}/{name} was deleted while being watched") from None
    except KeyboardInterrupt:
        watcher.close()
        return fail(
            f"stopped watching; {RESOURCE}/{name} keeps running "
            f"(`kubetune get {name} -w` follows it again)",
            EXIT_INTERRUPTED,
        )


# the commands


def cmd_submit(args: argparse.Namespace) -> int:
    from kubetune.client import submit

    checkpoint = {
        "frequency": args.checkpoint_frequency,
        "atEnd": args.checkpoint_at_end,
        "numToKeep": args.num_to_keep,
        "scoreAttribute": args.score_attribute,
        "scoreOrder": args.score_order,
    }
    if args.score_order and not args.score_attribute:
        raise InvalidSettings("--score-order needs --score-attribute (the metric it orders by)")
    checkpoint = {k: v for k, v in checkpoint.items() if v is not None}
    config = parse_config_args(args.config)
    stop = parse_stop_args(args.stop)
    job = submit(
        check_trainable(args.trainable),
        name=args.name,
        namespace=args.namespace,
        config=config if args.config else None,
        stop=stop or None,
        checkpoint=checkpoint or None,
        storage=args.storage,
        endpoint_url=args.endpoint_url,
        storage_secret=args.storage_secret,
        resources=parse_resources(args.gpus, args.resources),
        image=args.image,
        labels=parse_pairs(args.label, "--label", "team=vision") or None,
        max_failures=args.max_failures,
        restore_from=args.restore_from,
        suspend=args.suspend,
        ship=False,
        kubeconfig=args.kubeconfig,
        context=args.context,
    )
    body = job.get() if args.output in ("json", "yaml") or args.watch else {}
    if args.output in ("json", "yaml"):
        _dump(body, args.output, sys.stdout)
    elif args.output == "name":
        print(f"{RESOURCE}/{job.name}")
    else:
        print(f"{RESOURCE}/{job.name} created", flush=True)
    if args.watch:
        return watch(job.kube, job.namespace, job.name, body)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    if args.watch and not args.name:
        raise InvalidSettings("--watch follows one job: give its NAME")
    if args.watch and args.output:
        raise InvalidSettings("--watch prints the progress line: leave out -o")
    if args.name:
        job, body = _job(args)
        if args.watch:
            return watch(job.kube, job.namespace, job.name, body)
        bodies = [body]
    else:
        kube, namespace = _connect(args)
        bodies = _list_all(kube) if args.all_namespaces else kube.list_jobs(namespace)
        if not bodies and args.output not in ("json", "yaml"):
            where = "" if args.all_namespaces else f" in {namespace} namespace"
            print(f"No resources found{where}.", file=sys.stderr)
            return 0
    if args.output in ("json", "yaml"):
        _dump(bodies[0] if args.name else _as_list(bodies), args.output, sys.stdout)
    elif args.output == "name":
        for body in bodies:
            print(f"{RESOURCE}/{body['metadata']['name']}")
    else:
        wide = args.output == "wide"
        print(render_jobs(bodies, _now(), wide=wide, all_namespaces=args.all_namespaces))
    return 0


def _list_all(kube: Any) -> list[dict[str, Any]]:
    """TrainableJobs of every namespace (the client lists one namespace)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from kubetune.client import ClusterError

    try:
        found = cast(
            dict[str, Any],
            client.CustomObjectsApi(kube.api).list_cluster_custom_object(
                API_GROUP, API_VERSION, PLURAL
            ),
        )
    except ApiException as exc:
        raise ClusterError(f"TrainableJobs in all namespaces: {exc.reason}") from None
    return list(found.get("items") or [])


def job_events(kube: Any, namespace: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The core/v1 events about this job (this uid, when the event names one)."""
    from kubernetes import client

    meta = body.get("metadata") or {}
    found = client.CoreV1Api(kube.api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={meta.get('name')}"
    )
    events = [kube.api.sanitize_for_serialization(e) for e in found.items]
    uid = meta.get("uid")
    return [
        e
        for e in events
        if (e.get("involvedObject") or {}).get("kind") in (None, "TrainableJob")
        and (e.get("involvedObject") or {}).get("uid") in (None, "", uid)
    ]


def cmd_describe(args: argparse.Namespace) -> int:
    from kubernetes.client.rest import ApiException

    job, body = _job(args)
    events: list[dict[str, Any]] = []
    error = None
    try:
        events = job_events(job.kube, job.namespace, body)
    except ApiException as exc:
        error = f"{exc.status} {exc.reason}"
    print(render_describe(body, events, _now(), events_error=error))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    job, body = _job(args)
    printed = 0
    for line in job.logs(follow=args.follow):
        print(line, flush=args.follow)
        printed += 1
    if not printed and not (body.get("status") or {}).get("workerPod"):
        print(f"{RESOURCE}/{job.name} has no worker pod yet ({phase_of(body) or 'Pending'})",
              file=sys.stderr)  # fmt: skip
    return 0


_RESULTS: dict[str, Callable[[list[dict[str, Any]]], str]] = {
    "table": render_results_table,
    "json": render_results_json,
    "csv": render_results_csv,
}


def cmd_results(args: argparse.Namespace) -> int:
    job, _ = _job(args, endpoint_url=args.endpoint_url)
    rows = result_rows(job.results())
    if not rows:
        print(f"{RESOURCE}/{job.name} has no results yet", file=sys.stderr)
        return 0
    print(_RESULTS[args.output](rows))
    return 0


def _set_suspend(args: argparse.Namespace, suspend: bool) -> int:
    job, body = _job(args)
    verb = "suspended" if suspend else "resumed"
    if phase_of(body) in TERMINAL:
        raise CommandError(
            f"error: {RESOURCE}/{job.name} has already {phase_of(body)}: it cannot be {verb}"
        )
    if suspend:
        job.suspend()
    else:
        job.resume()
    print(f"{RESOURCE}/{job.name} {verb}", flush=True)
    if not args.wait:
        return 0
    status = job.wait("Suspended" if suspend else "Running", timeout=args.timeout)
    waited = {"status": status, "metadata": body.get("metadata"), "spec": body.get("spec")}
    phase = status.get("phase") or ""
    if phase in TERMINAL:  # it ended before reaching the wanted phase
        code, line = outcome(waited)
        print(line)
        return code
    latest = checkpoint_iteration(waited)
    at = f" (latest checkpoint: iteration {latest})" if latest is not None else ""
    print(f"{RESOURCE}/{job.name} {phase or ('Suspended' if suspend else 'Running')}{at}")
    return 0


def cmd_suspend(args: argparse.Namespace) -> int:
    return _set_suspend(args, True)


def cmd_resume(args: argparse.Namespace) -> int:
    return _set_suspend(args, False)
