"""Checkpoints on top of a Storage: a checkpoint exists only once its manifest,
written last, says so; nothing lists, restores from, reports or keeps a folder
without one. The manifest, the rules that rank and prune checkpoints (pure),
and a checkpoint opened or fetched by its full URI live here; the run folder
that holds them is `kubetune.storage.runfolder`.

A checkpoint is `checkpoint_<iteration, 6 digits>/` holding the user's files
and `.kubetune-manifest.json`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kubetune.storage import ObjectTooLarge, Storage, StorageError, open_storage
from kubetune_contract import CHECKPOINT_MANIFEST

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "StorageError",
    "download_checkpoint",
    "open_checkpoint",
]

log = logging.getLogger(__name__)

MANIFEST_KIND = "kubetune-checkpoint"
MANIFEST_VERSION = 1
CHECKPOINT_DIR = re.compile(r"checkpoint_(\d{6,})")
_MAX_METRIC_STR = 256  # strings longer than this are not scores; keep manifests small
# Storage content is untrusted: a manifest is read only up to a bound far above
# what kubetune writes, so a huge or hostile one costs its reader (the worker,
# the operator) no more than that. A manifest lists every file of a checkpoint
# (~60 bytes each): 16 MiB is over 250,000 files.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
# Manifest times are unix seconds; outside this range a time is not one the
# worker wrote (and turning it into a date would fail).
_MAX_MANIFEST_TIME = 253402300799.0  # 9999-12-31T23:59:59Z


class CheckpointError(Exception):
    """A checkpoint is missing, incomplete or unloadable; the message is one line
    naming the checkpoint and the fix."""


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


def read_manifest(storage: Storage, name: str, size: int) -> dict[str, Any] | None:
    """The manifest of checkpoint folder `name`, listed at `size` bytes, if it is
    well formed and within MAX_MANIFEST_BYTES; else None, with one log line."""
    if size > MAX_MANIFEST_BYTES:
        log.warning(
            "checkpoint %s has a %d-byte manifest, over %d: not kubetune's; ignoring it",
            name,
            size,
            MAX_MANIFEST_BYTES,
        )
        return None
    try:
        raw = storage.read_bytes(f"{name}/{CHECKPOINT_MANIFEST}", limit=MAX_MANIFEST_BYTES)
    except ObjectTooLarge as exc:  # rewritten since the listing
        log.warning("%s", exc)
        raw = None
    manifest = parse_manifest(raw) if raw is not None else None
    if raw is not None and manifest is None:
        log.warning("checkpoint %s has a damaged manifest; ignoring it", name)
    return manifest


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
    named = CHECKPOINT_DIR.fullmatch(name)
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


def download_named(storage: Storage, name: str, uri: str, local_dir: Path) -> CheckpointInfo:
    """Verify checkpoint folder `name` of storage (`uri` names it in errors), then
    copy its files (not the manifest) into local_dir."""
    manifest = _verify(storage, name, uri)
    local_dir.mkdir(parents=True, exist_ok=True)
    storage.download_dir(name, local_dir)
    (local_dir / CHECKPOINT_MANIFEST).unlink(missing_ok=True)
    return manifest_info(storage, name, manifest)


def manifest_info(storage: Storage, name: str, manifest: dict[str, Any]) -> CheckpointInfo:
    """The CheckpointInfo a parsed manifest of folder `name` vouches for."""
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
    return manifest_info(storage, name, _verify(storage, name, uri))


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
    return download_named(storage, name, uri, Path(local_dir))
