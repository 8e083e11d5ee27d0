"""Results and progress written off the training thread: the loop encodes each
result as a JSON line while it is still in the CPU cache and appends it to one
byte buffer (no object per line stays alive: keeping a second's worth of
them costs more than encoding); a writer thread stores the buffer as a new
result segment (kubetune.storage.results) at least every second and writes the
progress file, then hands it to the progress pusher, so a slow object store
or operator never stalls a step."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from typing import Any

import orjson

from kubetune.runtime.push import ProgressPusher
from kubetune.storage.results import ResultLog
from kubetune_contract import Progress

# A slow store gets a longer interval between segments (up to 4x its last
# write time), so the writer does not spend all its time in small writes.
_SLOW_STORE_FACTOR = 4.0
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


def _fallback(value: Any) -> Any:
    """What JSON cannot hold: numpy/torch scalars and arrays by value, the rest
    as str (Ray's result logger does the same)."""
    for name in ("item", "tolist"):  # a scalar's item() first; an array's item() raises
        convert = getattr(value, name, None)
        if callable(convert):
            try:
                return convert()
            except (TypeError, ValueError, RuntimeError):
                pass
    return str(value)


def _plain(value: Any) -> Any:
    """A copy the standard library encodes as orjson would have: str keys, and
    null for NaN and infinities."""
    if isinstance(value, dict):
        return {
            (k if isinstance(k, str | int | float | bool) or k is None else str(k)): _plain(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ResultEncoder:
    """A result as one JSON line, newline included: Ray's result.json content, in
    strict JSON (NaN and infinities become null, which Ray writes as bare NaN
    tokens that only Python reads). orjson takes about a microsecond where the
    standard library takes five to eight; what orjson refuses (integers beyond
    64 bits, tuple keys, cycles) goes through the standard library."""

    def line(self, result: dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(result, default=_fallback, option=_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            pass
        try:
            text = json.dumps(_plain(result), default=_fallback, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            text = json.dumps({"unserializable_result": repr(result)[:1000]})
        return text.encode() + b"\n"


class Persister:
    """Owns result segments, result.json and progress writes (and pushes) for one run.

    The loop hands each result to `add` (encode, then extend `pending`: the only
    per-iteration cost). `flush()` writes synchronously (before a checkpoint,
    at exit); the thread writes the rest. A write error is kept in `error` for
    the loop."""

    def __init__(
        self,
        store: Any,
        *,
        interval_s: float = 1.0,
        heartbeat_s: float = 30.0,
        pusher: ProgressPusher | None = None,
        results: ResultLog | None = None,
    ) -> None:
        self.pending = bytearray()
        self.error: BaseException | None = None
        self._store = store
        self.results = results if results is not None else ResultLog(store.storage)
        self._pusher = pusher
        self._encoder = ResultEncoder()
        encode, extend = self._encoder.line, self.pending.extend

        def add(result: dict[str, Any]) -> None:
            extend(encode(result))

        self.add = add
        self._interval = interval_s
        self._heartbeat = heartbeat_s
        self._lock = threading.Lock()  # held for a whole write
        self._slot = threading.Lock()  # guards _progress only: never blocks the loop long
        self._wake = threading.Event()
        self._closing = False
        self._assemble = False  # a checkpoint was committed: result.json if cheap
        self._progress: Progress | None = None
        self._last_doc: Progress | None = None
        self._last_body: bytes | None = None
        self._last_doc_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="kubetune-persist", daemon=True)

    def start(self) -> None:
        """Read the run's result segments (to continue them), then start the threads."""
        self.results.open()
        if self._pusher is not None:
            self._pusher.start()
        self._thread.start()

    def begin(self, iteration: int) -> None:
        """An attempt continues after `iteration` (a restored checkpoint's, 0 from
        the start): results stored for later iterations are superseded, and
        lines still pending from a failed attempt (all beyond it) are dropped."""
        with self._lock:
            n = len(self.pending)
            if n and self.results.next_iteration > iteration:
                del self.pending[:n]
            elif n:
                self._write_results()
            self.results.begin(iteration)

    def submit_progress(self, doc: Progress) -> None:
        """Hand over a progress document; the thread writes it at once."""
        with self._slot:
            self._progress = doc
        self._wake.set()

    def checkpoint_committed(self) -> None:
        """The thread assembles result.json if that is cheap now (see ResultLog)."""
        self._assemble = True
        self._wake.set()

    def flush(self) -> None:
        """Write every pending result and progress document now, in this thread.
        Raises the storage error if it fails; a success clears an earlier one
        (nothing is dropped from `pending` until its write succeeded)."""
        with self._lock:
            self._write_results()
            self._write_progress()
            self.error = None

    def close(self) -> None:
        """Stop the thread, write what is left, assemble result.json, write the
        last progress document, then push it synchronously (errors propagate,
        and then nothing is pushed)."""
        self._closing = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        try:
            with self._lock:
                self._write_results()
                self.results.finish()
                self._write_progress(push=False)
                self.error = None
        except BaseException:
            if self._pusher is not None:
                self._pusher.close(None)
            raise
        if self._pusher is not None:
            self._pusher.close(self._last_body)

    def _write_results(self) -> None:
        n = len(self.pending)
        if not n:
            return
        # Write the first n bytes, then drop them: lines added meanwhile stay for
        # next time, and a failed write keeps its lines for a retry. (A slice, not
        # a memoryview: an export would make the loop's extend() fail.)
        self.results.append(bytes(self.pending[:n]))
        del self.pending[:n]

    def _write_progress(self, push: bool = True) -> None:
        with self._slot:
            doc, self._progress = self._progress, None
        if doc is None:
            if self._last_doc is None or time.monotonic() - self._last_doc_at < self._heartbeat:
                return
            # Long steps: refresh `updated` so the operator sees the worker is alive.
            doc = dataclasses.replace(self._last_doc, updated=time.time())
        body = doc.encode()  # once: the same bytes are stored and pushed
        self._store.write_progress(body)
        self._last_doc, self._last_body, self._last_doc_at = doc, body, time.monotonic()
        if push and self._pusher is not None:
            self._pusher.offer(body)

    def _run(self) -> None:
        next_results = time.monotonic() + self._interval
        while not self._closing:
            self._wake.wait(max(0.0, next_results - time.monotonic()))
            self._wake.clear()
            if self._closing:
                return
            try:
                with self._lock:
                    # Progress first: a push waits for one write at most, never
                    # for a slow segment write or a result.json assembly.
                    self._write_progress()
                    start = time.monotonic()
                    if start >= next_results:
                        self._write_results()
                        took = time.monotonic() - start
                        next_results = time.monotonic() + max(
                            self._interval, _SLOW_STORE_FACTOR * took
                        )
                    if self._assemble:
                        self._assemble = False
                        self.results.assemble_if_cheap()
            except BaseException as exc:  # handed to the loop, which ends the run
                self.error = exc
                return
