"""Checkpoints and the run folder on top of a Storage: a checkpoint exists only
once its manifest, written last, says so; nothing lists, restores from, reports
or keeps a folder without one.

Layout under the run folder (<storage uri>/<namespace>/<name>, or a local folder):
`.kubetune/run.json` (which run owns the folder), `params.json`, `result.json`,
`.kubetune/progress.json` and `checkpoint_<iteration, 6 digits>/` each holding
the user's files and `.kubetune-manifest.json`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kubetune.storage import ObjectTooLarge, Storage, StorageError, open_storage
from kubetune_contract import (
    CHECKPOINT_MANIFEST,
    PARAMS_FILE,
    PROGRESS_FILE,
    RESULT_FILE,
    RUN_FILE,
    checkpoint_dirname,
)

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "RunConflictError",
    "RunStore",
    "StorageError",
    "download_checkpoint",
    "open_checkpoint",
]

log = logging.getLogger(__name__)

MANIFEST_KIND = "kubetune-checkpoint"
MANIFEST_VERSION = 1
_CHECKPOINT_DIR = re.compile(r"checkpoint_(\d{6,})")
_MAX_METRIC_STR = 256  # strings longer than this are not scores; keep manifests small
# Storage content is untrusted: files kubetune writes small are read only up to
# a bound far above what it writes, so a huge or hostile object costs its reader
# (the worker, the operator) no more than that. A manifest lists every file of
# a checkpoint (~60 bytes each): 16 MiB is over 250,000 files.
MAX_RUN_FILE_BYTES = 64 * 1024
MAX_PROGRESS_BYTES = 1024 * 1024
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
# Manifest times are unix seconds; outside this range a time is not one the
# worker wrote (and turning it into a date would fail).
_MAX_MANIFEST_TIME = 253402300799.0  # 9999-12-31T23:59:59Z


class CheckpointError(Exception):
    """A checkpoint is missing, incomplete or unloadable; the message is one line
    naming the checkpoint and the fix."""


class RunConflictError(Exception):
    """The run folder belongs to another run (a different run id)."""


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class CheckpointInfo:
    iteration: int
    path: str  # full URI of the checkpoint folder
    time: float  # unix time the manifest was written
    metrics: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_status(self) -> dict[str, Any]:
        return {"path": self.path, "iteration": self.iteration, "time": rfc3339(self.time)}


# --- pure helpers --------------------------------------------------------------


def scalar_metrics(result: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The JSON scalars of a result, nested dicts flattened with '/' (Ray looks
    score attributes up on flattened metrics, so "a/b" works)."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(scalar_metrics(value, prefix=f"{name}/"))
        elif value is None or isinstance(value, (bool, int, float)):
            out[name] = value
        elif isinstance(value, str):
            if len(value) <= _MAX_METRIC_STR:
                out[name] = value
        elif hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
            try:
                item = value.item()
            except (TypeError, ValueError, RuntimeError):
                continue
            if isinstance(item, (bool, int, float)):
                out[name] = item
    return out


def build_manifest(
    iteration: int, files: list[tuple[str, int]], metrics: dict[str, Any], now: float
) -> dict[str, Any]:
    return {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "iteration": iteration,
        "time": now,
        "metrics": scalar_metrics(metrics),
        "files": [{"path": p, "size": s} for p, s in sorted(files)],
    }


def parse_manifest(raw: bytes) -> dict[str, Any] | None:
    """The manifest if it is well formed, else None."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("kind") != MANIFEST_KIND:
        return None
    it, ts, metrics, files = (doc.get(k) for k in ("iteration", "time", "metrics", "files"))
    if isinstance(it, bool) or not isinstance(it, int) or it < 0:
        return None
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return None
    if not (0 <= ts <= _MAX_MANIFEST_TIME):  # also refuses NaN and the infinities
        return None
    if not isinstance(metrics, dict) or not isinstance(files, list):
        return None
    for f in files:
        if not (
            isinstance(f, dict)
            and isinstance(f.get("path"), str)
            and isinstance(f.get("size"), int)
            and not isinstance(f.get("size"), bool)
        ):
            return None
    return doc


def missing_files(manifest: dict[str, Any], present: dict[str, int]) -> list[str]:
    """Files the manifest lists that are absent or of another size."""
    return [f["path"] for f in manifest["files"] if present.get(f["path"]) != f["size"]]


def check_score_order(score_order: str) -> None:
    if score_order not in ("max", "min"):
        raise ValueError(f"score order {score_order!r} is invalid: use 'max' or 'min'")


def score_key(info: CheckpointInfo, attr: str, order: str) -> tuple[int, int, float, int]:
    """Sort key, higher is better: scored before unscored, NaN below every number
    (as in Ray), ties broken by recency."""
    value = info.metrics.get(attr)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return (0, 0, 0.0, info.iteration)
    if math.isnan(value):
        return (1, 0, 0.0, info.iteration)
    return (1, 1, float(value) if order == "max" else -float(value), info.iteration)


def pick_best(
    checkpoints: list[CheckpointInfo], score_attribute: str | None, score_order: str = "max"
) -> CheckpointInfo | None:
    check_score_order(score_order)
    if not checkpoints:
        return None
    if score_attribute is None:
        return max(checkpoints, key=lambda c: c.iteration)
    best = max(checkpoints, key=lambda c: score_key(c, score_attribute, score_order))
    return best if score_key(best, score_attribute, score_order)[0] else None


def pick_to_delete(
    checkpoints: list[CheckpointInfo],
    num_to_keep: int,
    score_attribute: str | None,
    score_order: str = "max",
) -> list[CheckpointInfo]:
    """Checkpoints outside the top num_to_keep, never the latest nor the best."""
    if isinstance(num_to_keep, bool) or not isinstance(num_to_keep, int) or num_to_keep < 1:
        raise ValueError(f"num_to_keep must be a positive integer, got {num_to_keep!r}")
    check_score_order(score_order)
    if not checkpoints:
        return []
    if score_attribute is None:
        ranked = sorted(checkpoints, key=lambda c: c.iteration, reverse=True)
    else:
        attr = score_attribute
        ranked = sorted(checkpoints, key=lambda c: score_key(c, attr, score_order), reverse=True)
    keep = {c.iteration for c in ranked[:num_to_keep]}
    keep.add(max(c.iteration for c in checkpoints))
    best = pick_best(checkpoints, score_attribute, score_order)
    if best is not None:
        keep.add(best.iteration)
    return sorted((c for c in checkpoints if c.iteration not in keep), key=lambda c: c.iteration)


# --- the run folder --------------------------------------------------------------


class RunStore:
    """A run folder (<storage uri>/<namespace>/<name>, or a local folder) and what lives in it."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.run_id: str | None = None
        # Manifests never change once written, so reading each one once is
        # enough: keyed by (folder, manifest size) to notice a rewrite.
        self._manifests: dict[tuple[str, int], dict[str, Any] | None] = {}

    # identity

    def claim(self, run_id: str | None) -> None:
        """Mark the folder as this run's; RunConflictError if another run owns it.
        run_id None is a local run: it claims an unclaimed folder and never refuses."""
        raw = self._read_run_file()
        if raw is None:
            if run_id is not None and self._has_unowned_content():
                raise RunConflictError(
                    f"run folder {self.storage.uri} already holds results of an unknown run "
                    f"(no {RUN_FILE}): move or delete it, or give the job another name"
                )
            doc = {"run_id": run_id or f"local-{uuid.uuid4().hex[:12]}", "created": _now3339()}
            data = json.dumps(doc, sort_keys=True).encode() + b"\n"
            if self.storage.write_bytes_if_absent(RUN_FILE, data):
                self.run_id = doc["run_id"]
                return
            raw = self._read_run_file()  # another process won the race
            if raw is None:
                raise StorageError(f"{self.storage.child_uri(RUN_FILE)} vanished while claimed")
        owner, created = _parse_run_file(raw)
        if run_id is None or owner == run_id:
            self.run_id = owner or run_id
            return
        raise RunConflictError(
            f"run folder {self.storage.uri} belongs to another run (id {owner or 'unreadable'}, "
            f"created {created or 'unknown'}), not {run_id}: delete or move that folder, "
            "or give the job another name or storage.uri"
        )

    def _read_run_file(self) -> bytes | None:
        """run.json's bytes; one over its bound reads as b"" (an unreadable owner)."""
        try:
            return self.storage.read_bytes(RUN_FILE, limit=MAX_RUN_FILE_BYTES)
        except ObjectTooLarge as exc:
            log.warning("%s", exc)
            return b""

    def _has_unowned_content(self) -> bool:
        if self.storage.exists(PARAMS_FILE) or self.storage.exists(RESULT_FILE):
            return True
        return any(_CHECKPOINT_DIR.fullmatch(d) for d in self.storage.list_dirs(""))

    # params, results, progress

    def write_params(self, config: dict[str, Any]) -> None:
        data = json.dumps(config, default=str, indent=2, sort_keys=True) + "\n"
        self.storage.write_bytes(PARAMS_FILE, data.encode())

    def append_results(self, results: list[dict[str, Any]]) -> None:
        if not results:
            return
        lines = "".join(json.dumps(r, default=str) + "\n" for r in results)
        self.storage.append_bytes(RESULT_FILE, lines.encode())

    def write_progress(self, body: bytes) -> None:
        """Store an encoded progress document (kubetune_contract.Progress.encode)."""
        self.storage.write_bytes(PROGRESS_FILE, body)

    def read_results(self) -> list[dict[str, Any]]:
        """Every result of the run, each iteration once, up to the worker's last
        flush (kubetune.storage.results.read_results)."""
        from kubetune.storage.results import read_results

        return read_results(self.storage)

    def read_progress(self) -> dict[str, Any] | None:
        """The progress document, or None when there is none or it is not one
        (too large, not JSON, not an object): logged once per read, never raised."""
        try:
            raw = self.storage.read_bytes(PROGRESS_FILE, limit=MAX_PROGRESS_BYTES)
        except ObjectTooLarge as exc:
            log.warning("%s", exc)
            return None
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            log.warning("%s is not JSON (%s): ignored", self.storage.child_uri(PROGRESS_FILE), exc)
            return None
        if not isinstance(doc, dict):
            log.warning("%s is not a JSON object: ignored", self.storage.child_uri(PROGRESS_FILE))
            return None
        return doc

    # checkpoints

    def commit_checkpoint(
        self, local_dir: Path, iteration: int, metrics: dict[str, Any]
    ) -> CheckpointInfo:
        """Upload every file of local_dir to checkpoint_<iteration>/, then the manifest."""
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
            raise CheckpointError(
                f"checkpoint iteration must be an integer >= 0, got {iteration!r}"
            )
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise CheckpointError(f"checkpoint folder {local_dir} does not exist")
        if (local_dir / CHECKPOINT_MANIFEST).exists():
            raise CheckpointError(
                f"checkpoint folder {local_dir} holds a file named {CHECKPOINT_MANIFEST}, "
                "a name kubetune reserves: rename that file"
            )
        name = checkpoint_dirname(iteration)
        # Rewriting an iteration (after a restore from an older checkpoint, or over
        # a dead upload): unmark it first, then clear stale files, so no moment
        # exists where an old manifest vouches for new or missing files.
        self.storage.delete(f"{name}/{CHECKPOINT_MANIFEST}")
        self.storage.delete_dir(name)
        self._forget(name)
        files = self.storage.upload_dir(local_dir, name)
        manifest = build_manifest(iteration, files, metrics, time.time())
        data = json.dumps(manifest, sort_keys=True, default=str).encode()
        self.storage.write_bytes(f"{name}/{CHECKPOINT_MANIFEST}", data)
        return self._info(name, manifest)

    def list_checkpoints(self) -> list[CheckpointInfo]:
        """Complete checkpoints only, by iteration."""
        return self._scan()[0]

    def latest_checkpoint(self) -> CheckpointInfo | None:
        found = self.list_checkpoints()
        return found[-1] if found else None

    def best_checkpoint(
        self, score_attribute: str | None, score_order: str = "max"
    ) -> CheckpointInfo | None:
        return pick_best(self.list_checkpoints(), score_attribute, score_order)

    def prune(
        self, num_to_keep: int | None, score_attribute: str | None, score_order: str = "max"
    ) -> list[CheckpointInfo]:
        """Delete checkpoints beyond num_to_keep, never the latest nor the best, and
        dead uploads older than the latest complete checkpoint; returns the
        complete checkpoints deleted."""
        complete, incomplete = self._scan()
        doomed: list[CheckpointInfo] = []
        if num_to_keep is not None:
            doomed = pick_to_delete(complete, num_to_keep, score_attribute, score_order)
        else:
            check_score_order(score_order)
        for info in doomed:
            self._delete_checkpoint(checkpoint_dirname(info.iteration))
        if complete:
            latest = complete[-1].iteration
            # An incomplete folder newer than the latest may be an upload in
            # progress; an older one can only be dead.
            for name, iteration in incomplete:
                if iteration < latest:
                    log.info("removing incomplete checkpoint leftover %s", name)
                    self._delete_checkpoint(name)
        return doomed

    def download(self, info: CheckpointInfo, local_dir: Path) -> CheckpointInfo:
        """Copy a checkpoint of this run into local_dir (verifying it first)."""
        name = checkpoint_dirname(info.iteration)
        return _download(self.storage, name, info.path, Path(local_dir))

    # internals

    def _info(self, name: str, manifest: dict[str, Any]) -> CheckpointInfo:
        return _manifest_info(self.storage, name, manifest)

    def _forget(self, name: str) -> None:
        for key in [k for k in self._manifests if k[0] == name]:
            del self._manifests[key]

    def _delete_checkpoint(self, name: str) -> None:
        # Manifest first: a crash mid-delete leaves an incomplete folder, never
        # a manifest vouching for deleted files.
        self.storage.delete(f"{name}/{CHECKPOINT_MANIFEST}")
        self.storage.delete_dir(name)
        self._forget(name)

    def _manifest(self, name: str, size: int) -> dict[str, Any] | None:
        key = (name, size)
        if key not in self._manifests:
            if size > MAX_MANIFEST_BYTES:
                log.warning(
                    "checkpoint %s has a %d-byte manifest, over %d: not kubetune's; ignoring it",
                    name,
                    size,
                    MAX_MANIFEST_BYTES,
                )
                self._manifests[key] = None
                return None
            try:
                raw = self.storage.read_bytes(
                    f"{name}/{CHECKPOINT_MANIFEST}", limit=MAX_MANIFEST_BYTES
                )
            except ObjectTooLarge as exc:  # rewritten since the listing
                log.warning("%s", exc)
                raw = None
            manifest = parse_manifest(raw) if raw is not None else None
            if raw is not None and manifest is None:
                log.warning("checkpoint %s has a damaged manifest; ignoring it", name)
            self._manifests[key] = manifest
        return self._manifests[key]

    def _scan(self) -> tuple[list[CheckpointInfo], list[tuple[str, int]]]:
        """(complete checkpoints by iteration, incomplete (folder, iteration)),
        from one listing of the run folder."""
        by_dir: dict[str, dict[str, int]] = {}
        for d in self.storage.list_dirs(""):
            if _CHECKPOINT_DIR.fullmatch(d):
                by_dir.setdefault(d, {})
        for rel, size in self.storage.list_files(""):
            head, sep, rest = rel.partition("/")
            if sep and _CHECKPOINT_DIR.fullmatch(head):
                by_dir.setdefault(head, {})[rest] = size
        complete: list[CheckpointInfo] = []
        incomplete: list[tuple[str, int]] = []
        for name, present in by_dir.items():
            iteration = int(name[len("checkpoint_") :])
            msize = present.pop(CHECKPOINT_MANIFEST, None)
            manifest = self._manifest(name, msize) if msize is not None else None
            if manifest is None or manifest["iteration"] != iteration:
                incomplete.append((name, iteration))
                continue
            missing = missing_files(manifest, present)
            if missing:
                log.warning("checkpoint %s lacks %s; ignoring it", name, ", ".join(missing[:3]))
                incomplete.append((name, iteration))
                continue
            complete.append(self._info(name, manifest))
        complete.sort(key=lambda c: c.iteration)
        return complete, sorted(incomplete, key=lambda x: x[1])


# --- checkpoints by full URI --------------------------------------------------------


def _split_uri(
    uri: str, endpoint_url: str | None, credentials: Mapping[str, str] | None
) -> tuple[Storage, str]:
    """The storage holding the checkpoint folder, and the folder's name in it."""
    if not uri or not uri.strip():
        raise CheckpointError("checkpoint path is empty: give the URI of a checkpoint folder")
    if uri.startswith("s3://"):
        parent, _, name = uri.rstrip("/").rpartition("/")
        if parent in ("s3:", "s3:/") or not name:
            raise CheckpointError(
                f"checkpoint {uri} names a bucket, not a checkpoint folder: "
                "give s3://BUCKET/PREFIX/checkpoint_<iteration>"
            )
        return open_storage(parent, endpoint_url=endpoint_url, credentials=credentials), name
    raw = uri[len("file://") :] if uri.startswith("file://") else uri
    path = Path(raw).expanduser().absolute()
    return open_storage(str(path.parent)), path.name


def _verify(storage: Storage, name: str, uri: str) -> dict[str, Any]:
    try:
        raw = storage.read_bytes(f"{name}/{CHECKPOINT_MANIFEST}", limit=MAX_MANIFEST_BYTES)
    except ObjectTooLarge:
        raw = b""  # parses as a damaged manifest below
    if raw is None:
        if storage.list_files(name):
            raise CheckpointError(
                f"checkpoint {uri} is incomplete (no manifest: its upload never finished); "
                "pick a complete one, e.g. the job's status.latestCheckpoint"
            )
        raise CheckpointError(
            f"checkpoint {uri} does not exist: give the path of a checkpoint folder, "
            "e.g. the job's status.latestCheckpoint"
        )
    manifest = parse_manifest(raw)
    named = _CHECKPOINT_DIR.fullmatch(name)
    if manifest is not None and named and int(named.group(1)) != manifest["iteration"]:
        manifest = None  # another folder's manifest, copied here: it vouches for nothing
    if manifest is None:
        raise CheckpointError(
            f"checkpoint {uri} is damaged (its {CHECKPOINT_MANIFEST} does not parse); "
            "pick another one, e.g. the job's status.latestCheckpoint"
        )
    present = dict(storage.list_files(name))
    missing = missing_files(manifest, present)
    if missing:
        raise CheckpointError(
            f"checkpoint {uri} is incomplete ({missing[0]} is missing or truncated); "
            "pick another one, e.g. the job's status.latestCheckpoint"
        )
    return manifest


def _download(storage: Storage, name: str, uri: str, local_dir: Path) -> CheckpointInfo:
    manifest = _verify(storage, name, uri)
    local_dir.mkdir(parents=True, exist_ok=True)
    storage.download_dir(name, local_dir)
    (local_dir / CHECKPOINT_MANIFEST).unlink(missing_ok=True)
    return _manifest_info(storage, name, manifest)


def _manifest_info(storage: Storage, name: str, manifest: dict[str, Any]) -> CheckpointInfo:
    return CheckpointInfo(
        iteration=manifest["iteration"],
        path=storage.child_uri(name),
        time=float(manifest["time"]),
        metrics=dict(manifest["metrics"]),
    )


def open_checkpoint(
    uri: str,
    *,
    endpoint_url: str | None = None,
    credentials: Mapping[str, str] | None = None,
) -> CheckpointInfo:
    """A checkpoint by its full URI; CheckpointError if missing or incomplete."""
    storage, name = _split_uri(uri, endpoint_url, credentials)
    return _manifest_info(storage, name, _verify(storage, name, uri))


def download_checkpoint(
    uri: str,
    local_dir: Path,
    *,
    endpoint_url: str | None = None,
    credentials: Mapping[str, str] | None = None,
) -> CheckpointInfo:
    """Verify the checkpoint is complete, then copy its files (not the manifest)
    into local_dir."""
    storage, name = _split_uri(uri, endpoint_url, credentials)
    return _download(storage, name, uri, Path(local_dir))


def _now3339() -> str:
    return rfc3339(time.time())


def _parse_run_file(raw: bytes) -> tuple[str | None, str | None]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    owner, created = doc.get("run_id"), doc.get("created")
    return _short_text(owner), _short_text(created)


def _short_text(value: Any) -> str | None:
    """A run id or time as kubetune writes them: one short printable line (they
    reach error messages and status); anything else reads as unreadable."""
    if isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
        return value
    return None
