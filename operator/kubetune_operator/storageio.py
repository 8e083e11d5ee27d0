"""What the operator reads from a job's storage: the worker's progress file and
whether a restoreFrom checkpoint is complete. Credentials come from the
Secret the job names and are never logged; only a job that names none is read
with the operator pod's own (as its worker uses its pod's).

Progress normally arrives by push (progress_api.py); the file is read only
when the operator starts, when a worker's pod ends, and when pushes stop, so
these reads grow with changes, not with jobs.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from typing import Any

from kubetune.storage import StorageError, open_storage
from kubetune.storage.checkpoints import CheckpointError, open_checkpoint
from kubetune.storage.runfolder import RunStore
from kubetune.storage.s3 import S3Storage
from kubetune_contract import Progress
from kubetune_operator.metrics import S3_REQUESTS
from kubetune_operator.model import JobView

log = logging.getLogger(__name__)

CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def credentials_from_secret(data: dict[str, str] | None) -> dict[str, str]:
    """The credentials of the Secret a job names; {} when it is missing. Never
    None: None means the job names no Secret (see `_frozen`)."""
    return {k: v for k, v in (data or {}).items() if k in CREDENTIAL_KEYS and v}


def _frozen(
    credentials: dict[str, str] | None, storage: dict[str, Any]
) -> tuple[tuple[str, str], ...]:
    """Credentials as the client cache keys them.

    None: the job names no Secret, so the operator reads with the credentials
    its own pod has (IRSA, an instance profile), as the job's worker does. A
    Secret that is named but missing (it may exist only in another namespace)
    or lacks the keys raises: the operator never reads or writes a job's
    storage with its own identity in place of the one the job named.
    """
    if credentials is not None and not all(credentials.get(k) for k in CREDENTIAL_KEYS[:2]):
        name = (storage.get("secretRef") or {}).get("name")
        raise StorageError(
            f"the Secret {name!r} named by spec.storage.secretRef is missing from the job's "
            "namespace or lacks AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: create it in "
            "the job's namespace (the operator does not use its own credentials instead)"
        )
    return tuple(sorted((credentials or {}).items()))


def _count_request(event_name: str = "", **_: Any) -> None:
    # botocore names its events before-call.s3.<Operation>.
    S3_REQUESTS.labels(event_name.rsplit(".", 1)[-1]).inc()


@functools.lru_cache(maxsize=64)
def _client_for(endpoint_url: str | None, credentials: tuple[tuple[str, str], ...]) -> S3Storage:
    # One boto3 client per (endpoint, credentials), not per job: a client costs
    # ~100 ms and a few MiB to build. A rotated Secret gets a new one.
    base = S3Storage("s3://kubetune", endpoint_url=endpoint_url, credentials=dict(credentials))
    base._client.meta.events.register("before-call.s3", _count_request)
    return base


def run_store(job: JobView, credentials: dict[str, str] | None) -> RunStore:
    uri = job.run_uri
    frozen = _frozen(credentials, job.storage)
    if uri.startswith("s3://"):
        return RunStore(_client_for(job.storage.get("endpointURL"), frozen).at(uri))
    return RunStore(open_storage(uri))


def read_progress(job: JobView, credentials: dict[str, str] | None) -> Progress | None:
    """The worker's latest progress, or None when there is none yet or storage fails
    (status then keeps what it had: it never goes back to a less true value)."""
    try:
        raw: dict[str, Any] | None = run_store(job, credentials).read_progress()
        progress = Progress.from_dict(raw) if raw else None
    except (StorageError, ValueError, TypeError, json.JSONDecodeError) as exc:
        log.warning("cannot read progress of %s/%s: %s", job.namespace, job.name, exc)
        return None
    if progress is None:
        return None
    if progress.run_id and progress.run_id != job.uid:
        log.warning(
            "progress of %s/%s is another run's (run id %r, not %s): ignored",
            job.namespace,
            job.name,
            progress.run_id,
            job.uid,
        )
        return None
    progress, dropped = progress.within(job.run_uri)
    if dropped:
        log.warning(
            "progress of %s/%s names checkpoints outside %s, ignored: %s",
            job.namespace,
            job.name,
            job.run_uri,
            ", ".join(repr(p[:200]) for p in dropped[:3]),
        )
    return progress


def check_restore_from(job: JobView, credentials: dict[str, str] | None) -> str | None:
    """None when spec.restoreFrom names a complete checkpoint, else why not (one line)."""
    uri = job.spec.get("restoreFrom")
    if not uri:
        return None
    try:
        _frozen(credentials, job.storage)
        open_checkpoint(uri, endpoint_url=job.storage.get("endpointURL"), credentials=credentials)
    except (CheckpointError, StorageError) as exc:
        return f"restoreFrom {uri}: {exc}"
    return None


def read_trial_results(job: JobView, credentials: dict[str, str] | None) -> list[dict[str, Any]]:
    """A sweep trial's results (each iteration once); [] when there are none yet
    or storage fails (the decision waits for the next change)."""
    from kubetune.storage.results import read_result_bytes

    try:
        data = read_result_bytes(run_store(job, credentials).storage)
    except (StorageError, ValueError) as exc:
        log.warning("cannot read results of %s/%s: %s", job.namespace, job.name, exc)
        return []
    results, bad = parse_result_lines(data)
    if bad:
        log.warning(
            "results of %s/%s: %d line(s) are not JSON objects and were skipped",
            job.namespace,
            job.name,
            bad,
        )
    return results


def parse_result_lines(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of a result.json, one per line, and how many lines were
    something else (damaged, or written by another program): skipped, so one
    bad line never hides the others."""
    results: list[dict[str, Any]] = []
    bad = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):
            bad += 1
            continue
        if isinstance(doc, dict) and _iteration_ok(doc.get("training_iteration")):
            results.append(doc)
        else:
            bad += 1
    return results, bad


def _iteration_ok(value: Any) -> bool:
    """A result's training_iteration, when it has one, is a finite number >= 0
    (the sweep's schedulers count with it)."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value >= 0


def write_object(
    folder: str, name: str, data: bytes, storage: dict[str, Any], credentials: dict[str, str] | None
) -> bool:
    """One object under a folder of the jobs' storage (a sweep's trial table)."""
    try:
        frozen = _frozen(credentials, storage)
        if folder.startswith("s3://"):
            _client_for(storage.get("endpointURL"), frozen).at(folder).write_bytes(name, data)
        else:
            open_storage(folder).write_bytes(name, data)
    except StorageError as exc:
        log.warning("cannot write %s/%s: %s", folder, name, exc)
        return False
    return True


def copy_object(
    source: str, target: str, storage: dict[str, Any], credentials: dict[str, str] | None
) -> bool:
    """One object copied as bytes (a sweep's shipped code into a trial's folder:
    the operator moves the bytes and never unpickles them)."""
    src_dir, _, src_name = source.rpartition("/")
    dst_dir, _, dst_name = target.rpartition("/")
    try:
        frozen = _frozen(credentials, storage)
        client = _client_for(storage.get("endpointURL"), frozen)
        if client.at(dst_dir).size(dst_name) is not None:
            return True  # content-addressed: already there
        data = client.at(src_dir).read_bytes(src_name)
        if data is None:
            log.warning("cannot copy %s: it does not exist", source)
            return False
        client.at(dst_dir).write_bytes(dst_name, data)
    except StorageError as exc:
        log.warning("cannot copy %s to %s: %s", source, target, exc)
        return False
    return True
