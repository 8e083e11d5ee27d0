"""Where a job's progress comes from: the last report its worker pushed, and
the progress file in S3 when a push may have been missed.

The file is read only when it can say something pushes did not:
- once per job after the operator starts, if its worker has run (a push may
  have arrived at the previous operator process only);
- once when the worker pod of an attempt ends without a final push (a push
  lost on the way out);
- when a running worker has pushed nothing for `silent_after_s` (the worker
  cannot reach the operator: S3 is the fallback channel, polled at that rate).
A waiting job (pod Pending), a suspended and a finished job cost no read.
Nothing here is the only copy: the worker's file is the durable record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from kubetune_contract import Progress
from kubetune_operator.model import PodView

SILENT_AFTER_S = 60.0


@dataclass(frozen=True)
class Report:
    doc: bytes  # the progress document as pushed (compact JSON)
    updated: float  # the worker's clock in the document
    received: float  # our monotonic clock when it arrived
    pod: str = ""  # the name of the worker pod that sent it

    def progress(self) -> Progress:
        return Progress.from_dict(orjson.loads(self.doc))


def newer(a: Progress | None, b: Progress | None) -> Progress | None:
    """The more recent of two progress documents (by the worker's clock, then iteration)."""
    if a is None or b is None:
        return a or b
    return a if (a.updated or 0, a.iteration) >= (b.updated or 0, b.iteration) else b


class ProgressBook:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        silent_after_s: float = SILENT_AFTER_S,
    ) -> None:
        self._clock = clock
        self.silent_after_s = silent_after_s
        self._lock = threading.Lock()
        self._pushed: dict[str, Report] = {}  # job uid -> latest report
        self._read_at: dict[str, float] = {}  # job uid -> last S3 read
        self._final_read: dict[str, str] = {}  # job uid -> pod name whose end was read

    def push(self, job_uid: str, doc: bytes, updated: float, pod: str = "") -> bool:
        """Keep a pushed document if it is newer than the one kept; True if kept."""
        with self._lock:
            old = self._pushed.get(job_uid)
            if old is not None and old.updated > updated:
                return False
            self._pushed[job_uid] = Report(doc, updated, self._clock(), pod)
            return True

    def pushed(self, job_uid: str) -> Report | None:
        with self._lock:
            return self._pushed.get(job_uid)

    def forget(self, job_uid: str) -> None:
        with self._lock:
            self._pushed.pop(job_uid, None)
            self._read_at.pop(job_uid, None)
            self._final_read.pop(job_uid, None)

    def needs_file_read(
        self, job_uid: str, worker: str, pod: PodView | None, seen: bool = True
    ) -> bool:
        """Should this reconcile read the progress file? (see the module doc)
        `seen`: the current worker pod was seen by the operator (status holds
        its uid), so a missing pod has gone rather than not been made yet."""
        with self._lock:
            read_at = self._read_at.get(job_uid)
            report = self._pushed.get(job_uid)
        ended_reported = report is not None and report.pod == worker and _is_final(report)
        if pod is None or (pod.phase == "Pending" and not pod.deleting):
            # Never ran (waiting for a node or GPUs), or gone: status already
            # holds what earlier attempts reported; a gone pod's end is read
            # once, unless it pushed its final report.
            return (
                bool(worker)
                and pod is None
                and seen
                and not ended_reported
                and self._unread_end(job_uid, worker)
            )
        if read_at is None and report is None:
            return True  # first sight since this operator started
        if pod.finished or pod.deleting:
            return not ended_reported and self._unread_end(job_uid, worker)
        last_heard = max(read_at or 0.0, report.received if report else 0.0)
        return self._clock() - last_heard >= self.silent_after_s

    def _unread_end(self, job_uid: str, worker: str) -> bool:
        with self._lock:
            return self._final_read.get(job_uid) != worker

    def mark_read(self, job_uid: str, worker: str, pod: PodView | None) -> None:
        with self._lock:
            self._read_at[job_uid] = self._clock()
            if pod is None or pod.finished or pod.deleting:
                self._final_read[job_uid] = worker

    def next_check_in(self, job_uid: str, pod: PodView | None) -> float | None:
        """Seconds until a running worker's silence should be looked at again."""
        if pod is None or pod.phase != "Running" or pod.deleting:
            return None
        with self._lock:
            read_at = self._read_at.get(job_uid) or 0.0
            report = self._pushed.get(job_uid)
        last_heard = max(read_at, report.received if report else 0.0)
        return max(1.0, last_heard + self.silent_after_s - self._clock())


def _is_final(report: Report) -> bool:
    try:
        return report.progress().state not in ("", "running")
    except (ValueError, TypeError):
        return False
