"""A run's results as immutable segments, so that keeping them costs O(new bytes).

S3 objects cannot grow: rewriting `result.json` at each flush made a run's
traffic quadratic in its results. Instead, each flush writes the lines it has
as one new object under `.kubetune/results/`, written once and never read back
by the worker:

    .kubetune/results/<seq, 8 digits>-<first iteration, 8 digits>-<last iteration, 8 digits>.jsonl

`seq` orders the segments; the lines of a segment are the results of
iterations `first` .. `last`, one per line (`last = first - 1`: no lines).
The run's results are the segments applied in `seq` order, each one first
cutting what came before it to the iterations below its `first`, then adding
its lines. So a worker that restarts from the checkpoint of iteration k writes
its results from k + 1 on, and they replace whatever a crashed attempt had
written after k: every iteration is there exactly once. (An empty segment,
`first = k + 1`, marks such a restart before its first result.)

The segments written since the last merge are also kept in memory; every
`chunk_segments` segments or `chunk_bytes` bytes they are merged into one
segment with a new `seq` (which supersedes them by the rule above, so a crash
between the write and the deletes loses and duplicates nothing), and the small
ones are deleted. Each result byte is thus written at most twice, and a week
at one flush a second leaves about 600 segments, not 600,000.

`result.json` (Ray's file: one JSON result per line) is assembled from the
segments at the end of a run (any exit the loop sees: completed, stopped by a
signal, failed) and at a checkpoint when the results have at least doubled
since it was last assembled; on S3 the large segments are copied on the server
(UploadPartCopy), so the worker sends only the small ones. On a local disk,
where files grow in place, `result.json` is appended at each flush as well.
Mid-run, `read_results` gives the results up to the last flush.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubetune.storage import Storage, StorageError
from kubetune.storage.base import Piece
from kubetune_contract import RESULT_FILE, RESULTS_DIR

__all__ = ["ResultLog", "Segment", "read_result_bytes", "read_results"]

log = logging.getLogger("kubetune")

_NAME = re.compile(r"(\d{8,})-(\d{8,})-(\d{8,})\.jsonl")
CHUNK_BYTES = 8 * 1024 * 1024
CHUNK_SEGMENTS = 1024
# At the end of a run, a tail of this many segments or more is merged too, so
# each worker exit leaves fewer small objects behind.
FINISH_MERGE_SEGMENTS = 64


@dataclass
class Segment:
    """One stored segment: iterations first..last, `size` bytes; `data` while
    this process still holds its bytes."""

    seq: int
    first: int
    last: int
    size: int
    data: bytes | None = None

    @property
    def name(self) -> str:
        return segment_name(self.seq, self.first, self.last)

    @property
    def path(self) -> str:
        return RESULTS_DIR + self.name

    @property
    def count(self) -> int:
        return max(0, self.last - self.first + 1)


def segment_name(seq: int, first: int, last: int) -> str:
    return f"{seq:08d}-{first:08d}-{max(last, 0):08d}.jsonl"


def parse_segment_name(name: str, size: int = 0) -> Segment | None:
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    seq, first, last = (int(g) for g in m.groups())
    if last < first:  # a marker: no lines
        last = first - 1
    return Segment(seq, first, last, size)


@dataclass
class _Run:
    """The first `count` lines of a segment, as they stand in the results."""

    seg: Segment
    count: int

    @property
    def whole(self) -> bool:
        return self.count == self.seg.count


def _apply(view: list[_Run], seg: Segment) -> None:
    """results := results[iterations < seg.first] + seg's lines."""
    while view:
        run = view[-1]
        if run.seg.first >= seg.first:
            view.pop()
            continue
        end = run.seg.first + run.count  # one past the last kept iteration
        if end > seg.first:
            run.count = seg.first - run.seg.first
        break
    if seg.count:
        view.append(_Run(seg, seg.count))


def build_view(segments: Sequence[Segment]) -> list[_Run]:
    view: list[_Run] = []
    for seg in sorted(segments, key=lambda s: s.seq):
        _apply(view, seg)
    return view


def _head(data: bytes, lines: int) -> bytes:
    """The first `lines` lines of data (all of it if it has fewer)."""
    pos = -1
    for _ in range(lines):
        pos = data.find(b"\n", pos + 1)
        if pos < 0:
            return data
    return data[: pos + 1]


def _compose(segments: Sequence[Segment]) -> list[tuple[int, int, bytes]]:
    """Segments (in seq order, bytes at hand) merged into as few segments as
    give the same results when applied in their place: one unless a gap in the
    iterations splits them."""
    out: list[tuple[int, int, list[bytes]]] = []
    for seg in segments:
        assert seg.data is not None
        if not out:
            out.append((seg.first, seg.last, [seg.data]))
            continue
        first, last, parts = out[-1]
        if seg.first == last + 1:
            parts.append(seg.data)
            out[-1] = (first, seg.last, parts)
        elif first <= seg.first <= last:  # a restart: cut, then continue
            kept = _head(b"".join(parts), seg.first - first)
            out[-1] = (first, seg.last, [kept, seg.data])
        elif seg.first < first:  # a restart from before all of it
            out[-1] = (seg.first, seg.last, [seg.data])
        else:  # a gap: a segment of its own
            out.append((seg.first, seg.last, [seg.data]))
    return [(first, last, b"".join(parts)) for first, last, parts in out]


def scan(storage: Storage) -> list[Segment]:
    """The stored segments, by seq (one listing)."""
    found = []
    for name, size in storage.list_files(RESULTS_DIR):
        seg = parse_segment_name(name, size)
        if seg is not None:
            found.append(seg)
    return sorted(found, key=lambda s: s.seq)


class _Vanished(Exception):
    pass


def _run_bytes(storage: Storage, run: _Run) -> bytes:
    data = run.seg.data
    if data is None:
        data = storage.read_bytes(run.seg.path)
        if data is None:
            raise _Vanished(run.seg.path)
    return data if run.whole else _head(data, run.count)


def read_result_bytes(source: Any) -> bytes:
    """Every result line of a run (a RunStore or a Storage at the run folder),
    each iteration once, up to the worker's last flush: the segments if there
    are any, else `result.json` (a run written before segments existed)."""
    storage: Storage = getattr(source, "storage", source)
    for _ in range(5):
        segments = scan(storage)
        if not segments:
            return storage.read_bytes(RESULT_FILE) or b""
        try:
            return b"".join(_run_bytes(storage, run) for run in build_view(segments))
        except _Vanished:
            continue  # merged and deleted since the listing: list again
    raise StorageError(
        f"the results under {storage.child_uri(RESULTS_DIR)} kept changing while read; retry"
    )


def read_results(source: Any) -> list[dict[str, Any]]:
    """The run's results as dicts (see read_result_bytes); NaN and infinities,
    stored as null, stay None."""
    out = []
    for line in read_result_bytes(source).splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


class ResultLog:
    """The writer's side: segments, merges and result.json for one run folder.
    Used from one thread at a time (the Persister holds its lock)."""

    def __init__(
        self,
        storage: Storage,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        chunk_segments: int = CHUNK_SEGMENTS,
    ) -> None:
        self.storage = storage
        self.live = storage.appends_in_place
        self.chunk_bytes = chunk_bytes
        self.chunk_segments = chunk_segments
        self.next_iteration = 1
        self._segments: list[Segment] = []
        self._view: list[_Run] = []
        self._seq = 0
        self._staged: list[Segment] = []  # written by this process since the last merge
        self._staged_bytes = 0
        self._dirty = False  # result.json lags the segments
        self._assembled = 0  # result.json's size when last assembled

    # --- start and restarts

    def open(self) -> None:
        """Read the folder's segment list (one listing) to continue it."""
        self._segments = scan(self.storage)
        if not self._segments:
            self._adopt_legacy()
        self._view = build_view(self._segments)
        self._seq = max((s.seq for s in self._segments), default=-1) + 1
        if not self._segments:
            return
        expected = self._view_bytes()
        actual = self.storage.size(RESULT_FILE)
        self._assembled = actual or 0
        self._dirty = expected is None or actual != expected
        if self._dirty and self.live:
            self.assemble()

    def _adopt_legacy(self) -> None:
        """A result.json written before segments existed becomes segment 0, its
        lines numbered back from the last line's training_iteration."""
        data = self.storage.read_bytes(RESULT_FILE)
        if not data:
            return
        if not data.endswith(b"\n"):
            data += b"\n"
        lines = data.count(b"\n")
        last = lines
        try:
            value = json.loads(data.rstrip(b"\n").rpartition(b"\n")[2])["training_iteration"]
            if isinstance(value, int) and not isinstance(value, bool) and value >= lines:
                last = value
        except (ValueError, KeyError, TypeError):
            pass
        seg = Segment(0, last - lines + 1, last, len(data))
        self.storage.write_bytes(seg.path, data)
        self._segments = [seg]

    def begin(self, iteration: int) -> None:
        """An attempt continues after `iteration` (0: from the start): the next
        line is iteration + 1, and stored lines beyond it are superseded."""
        self.next_iteration = iteration + 1
        last = self.last_iteration
        if last is not None and last > iteration:
            self._write(b"", iteration + 1, iteration)

    @property
    def last_iteration(self) -> int | None:
        if not self._view:
            return None
        run = self._view[-1]
        return run.seg.first + run.count - 1

    # --- flushes

    def append(self, data: bytes) -> None:
        """Store whole lines (the results of the next iterations) as one segment."""
        lines = data.count(b"\n")
        if not lines:
            return
        first = self.next_iteration
        self._write(data, first, first + lines - 1)
        self.next_iteration = first + lines

    def _write(self, data: bytes, first: int, last: int) -> None:
        seg = Segment(self._seq, first, last, len(data), data)
        self.storage.write_bytes(seg.path, data)
        self._seq += 1
        extends = self.last_iteration in (None, first - 1) and seg.count > 0
        self._add(seg)
        self._staged.append(seg)
        self._staged_bytes += len(data)
        if self.live:
            if extends and not self._dirty:
                self.storage.append_bytes(RESULT_FILE, data)
                self._assembled += len(data)
            else:
                self.assemble()
        else:
            self._dirty = True
        if self._staged_bytes >= self.chunk_bytes or len(self._staged) >= self.chunk_segments:
            self.merge()

    def _add(self, seg: Segment) -> None:
        self._segments.append(seg)
        _apply(self._view, seg)

    def merge(self) -> None:
        """The segments written since the last merge as one (or, across a gap,
        a few) new segments; then the small ones are deleted."""
        staged, self._staged, self._staged_bytes = self._staged, [], 0
        if len(staged) < 2:
            for seg in staged:
                seg.data = None
            return
        for first, last, data in _compose(staged):
            seg = Segment(self._seq, first, last, len(data))
            self.storage.write_bytes(seg.path, data)
            self._seq += 1
            self._add(seg)
        gone = {id(s) for s in staged}
        self._segments = [s for s in self._segments if id(s) not in gone]
        self.storage.delete_many(s.path for s in staged)

    # --- result.json

    def _view_bytes(self) -> int | None:
        """Size of the assembled results, if known without reading (no cut segment)."""
        if all(run.whole for run in self._view):
            return sum(run.seg.size for run in self._view)
        return None

    def assemble(self) -> None:
        """Write result.json: every result line, each iteration once."""
        pieces = []
        for run in self._view:
            if run.whole:
                pieces.append(Piece(path=run.seg.path, size=run.seg.size, data=run.seg.data))
                continue
            try:
                pieces.append(Piece(data=_run_bytes(self.storage, run)))
            except _Vanished:
                raise StorageError(
                    f"result segment {self.storage.child_uri(run.seg.path)} vanished: "
                    "another process is writing this run's results"
                ) from None
        self._assembled = self.storage.compose(RESULT_FILE, pieces)
        self._dirty = False

    def assemble_if_cheap(self) -> bool:
        """At a checkpoint: assemble when the results at least doubled since the
        last assembly, so that all assemblies together write at most twice the
        results (a geometric series)."""
        if not self._dirty:
            return False
        size = self._view_bytes()
        if size is None:
            size = sum(run.seg.size for run in self._view)
        if size < 2 * self._assembled:
            return False
        self.assemble()
        return True

    def finish(self) -> None:
        """At the end of a run: merge a long tail of small segments, then
        assemble result.json, which holds every result."""
        if len(self._staged) >= FINISH_MERGE_SEGMENTS:
            self.merge()
        if self._dirty:
            self.assemble()

    # --- for tests and the benchmark

    @property
    def segments(self) -> list[Segment]:
        return list(self._segments)

    def stats(self) -> dict[str, Any]:
        size = sum(run.seg.size for run in self._view)
        return {
            "segments": len(self._segments),
            "staged": len(self._staged),
            "bytes": size,
            "assembled": self._assembled,
            "ratio": (self._assembled / size) if size else math.nan,
        }
