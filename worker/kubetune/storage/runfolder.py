"""The run folder (<storage uri>/<namespace>/<name>, or a local folder) and what
lives in it, through one object, `RunStore`: which run owns it, the params,
results and progress files, and its checkpoints (kept by the rules of
`kubetune.storage.checkpoints`). The worker writes it; the operator reads it.

Layout: `.kubetune/run.json` (which run owns the folder), `params.json`,
`result.json`, `.kubetune/progress.json` and `checkpoint_<iteration, 6 digits>/`
each holding the user's files and `.kubetune-manifest.json`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from kubetune.storage import ObjectTooLarge, Storage, StorageError
from kubetune.storage.checkpoints import (
    CHECKPOINT_DIR,
    CheckpointError,
    CheckpointInfo,
    build_manifest,
    check_score_order,
    download_named,
    manifest_info,
    missing_files,
    pick_best,
    pick_to_delete,
    read_manifest,
    rfc3339,
)
from kubetune_contract import (
    CHECKPOINT_MANIFEST,
    PARAMS_FILE,
    PROGRESS_FILE,
    RESULT_FILE,
    RUN_FILE,
    checkpoint_dirname,
)

__all__ = ["RunConflictError", "RunStore"]

log = logging.getLogger(__name__)

# Storage content is untrusted: files kubetune writes small are read only up to
# a bound far above what it writes, so a huge or hostile object costs its reader
# (the worker, the operator) no more than that.
MAX_RUN_FILE_BYTES = 64 * 1024
MAX_PROGRESS_BYTES = 1024 * 1024


class RunConflictError(Exception):
    """The run folder belongs to another run (a different run id)."""


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
        return any(CHECKPOINT_DIR.fullmatch(d) for d in self.storage.list_dirs(""))

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
        return download_named(self.storage, name, info.path, Path(local_dir))

    # internals

    def _info(self, name: str, manifest: dict[str, Any]) -> CheckpointInfo:
        return manifest_info(self.storage, name, manifest)

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
            self._manifests[key] = read_manifest(self.storage, name, size)
        return self._manifests[key]

    def _scan(self) -> tuple[list[CheckpointInfo], list[tuple[str, int]]]:
        """(complete checkpoints by iteration, incomplete (folder, iteration)),
        from one listing of the run folder."""
        by_dir: dict[str, dict[str, int]] = {}
        for d in self.storage.list_dirs(""):
            if CHECKPOINT_DIR.fullmatch(d):
                by_dir.setdefault(d, {})
        for rel, size in self.storage.list_files(""):
            head, sep, rest = rel.partition("/")
            if sep and CHECKPOINT_DIR.fullmatch(head):
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
