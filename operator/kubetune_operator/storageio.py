"""What the operator reads from a job's storage: the worker's progress file and
whether a restoreFrom checkpoint is complete. Credentials come from the job's
Secret (never from the operator's own environment) and are never logged.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from kubetune.checkpoints import CheckpointError, RunStore, open_checkpoint
from kubetune.storage import StorageError, open_storage
from kubetune_operator.model import JobView, Progress

log = logging.getLogger(__name__)

CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def credentials_from_secret(data: dict[str, str] | None) -> dict[str, str] | None:
    if data is None:
        return None
    return {k: v for k, v in data.items() if k in CREDENTIAL_KEYS and v}


@functools.lru_cache(maxsize=256)
def _run_store(
    uri: str, endpoint_url: str | None, credentials: tuple[tuple[str, str], ...]
) -> RunStore:
    # A boto3 client costs ~100 ms to build: one per (folder, endpoint, credentials),
    # so a rotated Secret gets a new client and an unchanged one reuses it.
    return RunStore(
        open_storage(uri, endpoint_url=endpoint_url, credentials=dict(credentials) or None)
    )


def read_progress(job: JobView, credentials: dict[str, str] | None) -> Progress | None:
    """The worker's latest progress, or None when there is none yet or storage fails
    (status then keeps what it had: it never goes back to a less true value)."""
    frozen = tuple(sorted((credentials or {}).items()))
    try:
        store = _run_store(job.run_uri, job.storage.get("endpointURL"), frozen)
        raw: dict[str, Any] | None = store.read_progress()
    except (StorageError, ValueError, json.JSONDecodeError) as exc:
        log.warning("cannot read progress of %s/%s: %s", job.namespace, job.name, exc)
        return None
    return Progress.from_dict(raw) if raw else None


def check_restore_from(job: JobView, credentials: dict[str, str] | None) -> str | None:
    """None when spec.restoreFrom names a complete checkpoint, else why not (one line)."""
    uri = job.spec.get("restoreFrom")
    if not uri:
        return None
    try:
        open_checkpoint(uri, endpoint_url=job.storage.get("endpointURL"), credentials=credentials)
    except (CheckpointError, StorageError) as exc:
        return f"restoreFrom {uri}: {exc}"
    return None
