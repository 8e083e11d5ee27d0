"""A coalescing, delaying work queue with per-key backoff, the reconcile
threads that serve it (one loop for every kind), and a write budget.

The operator reconciles a job when something about it changed, not on a
timer: watch events, progress reports and scheduled checks all `add` the
job's key. A key is queued at most once however often it is added, and a key
added while it is being reconciled is reconciled once more afterwards (never
twice at the same time): client-go's workqueue contract, so N events about one
job cost one reconcile, and work grows with changes, not with jobs.

Thread-safe: watch handlers add from the event loop, reconcile threads get.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
ObjectKey = tuple[str, str]  # (namespace, name)

log = logging.getLogger("kubetune_operator")

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 60.0
_EPSILON = 1e-9  # refills are float sums: 0.1 * 10 may come out just under 1


class WorkQueue(Generic[K]):
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._ready: deque[K] = deque()
        self._urgent: deque[K] = deque()
        self._queued: set[K] = set()  # waiting in _urgent or _ready
        self._in_urgent: set[K] = set()  # queued and in _urgent too
        self._dirty_urgent: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()  # added again while processing
        self._delayed: list[tuple[float, int, K]] = []  # heap of (due, seq, key)
        self._due: dict[K, float] = {}  # the earliest due time per delayed key
        self._seq = itertools.count()
        self._failures: dict[K, int] = {}
        self._backoff_base = backoff_base_s
        self._backoff_max = backoff_max_s
        self._closed = False

    def add(self, key: K, delay: float = 0.0, *, urgent: bool = False) -> None:
        """Queue key now, or after delay seconds (an earlier schedule wins).
        Urgent keys (something about the object changed) are handed out before
        the others (progress, scheduled checks, resyncs)."""
        with self._cond:
            if delay <= 0:
                self._add_now(key, urgent)
                return
            due = self._clock() + delay
            if self._due.get(key, float("inf")) <= due:
                return
            self._due[key] = due
            heapq.heappush(self._delayed, (due, next(self._seq), key))
            self._cond.notify()

    def _add_now(self, key: K, urgent: bool = False) -> None:
        if key in self._processing:
            self._dirty.add(key)
            if urgent:
                self._dirty_urgent.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            (self._urgent if urgent else self._ready).append(key)
            self._cond.notify()
        elif urgent and key not in self._in_urgent:
            # Already queued behind others: its entry there goes stale.
            self._in_urgent.add(key)
            self._urgent.append(key)

    def _pop_ready(self) -> K | None:
        for lane in (self._urgent, self._ready):
            while lane:
                key = lane.popleft()
                if key in self._queued:  # else handed out already from the other lane
                    self._queued.discard(key)
                    self._in_urgent.discard(key)
                    return key
        return None

    def _promote_due(self) -> float | None:
        """Move due keys to the ready queue; the seconds until the next is due."""
        now = self._clock()
        while self._delayed:
            due, _, key = self._delayed[0]
            if self._due.get(key) != due:  # superseded by an earlier schedule, or done
                heapq.heappop(self._delayed)
                continue
            if due > now:
                return due - now
            heapq.heappop(self._delayed)
            del self._due[key]
            self._add_now(key)
        return None

    def get(self, timeout: float | None = None) -> K | None:
        """The next key to reconcile (marked as processing), or None on timeout/close."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._closed:
                wait = self._promote_due()
                key = self._pop_ready()
                if key is not None:
                    self._processing.add(key)
                    return key
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)
            return None

    def done(self, key: K) -> None:
        """Processing of key ended; a key added meanwhile is queued again now."""
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self._add_now(key, key in self._dirty_urgent)
                self._dirty_urgent.discard(key)

    def retry_later(self, key: K) -> float:
        """Queue key again after an exponential backoff (a failed reconcile)."""
        with self._cond:
            n = self._failures.get(key, 0) + 1
            self._failures[key] = n
        delay = min(self._backoff_base * 2 ** (n - 1), self._backoff_max)
        self.add(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """Reset key's backoff (its last reconcile succeeded)."""
        with self._cond:
            self._failures.pop(key, None)

    def discard(self, key: K) -> None:
        """Drop key's scheduled and backoff state (the object is gone)."""
        with self._cond:
            self._failures.pop(key, None)
            self._due.pop(key, None)

    def depth(self) -> int:
        """Keys waiting: ready now plus scheduled."""
        with self._cond:
            return len(self._queued) + len(self._due)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class ReconcileThreads:
    """The one reconcile loop, for every kind the operator reconciles (jobs,
    sweeps), each with its own queue and reconcile function. A reconcile
    returns the seconds after which to look again (None: only when something
    changes); one that raises is retried after its key's backoff and never
    stops a thread; one that succeeds resets the backoff. The threads end when
    the queue is closed."""

    def __init__(
        self,
        queue: WorkQueue[ObjectKey],
        reconcile: Callable[[ObjectKey], float | None],
        *,
        name: str,
        what: str = "reconcile",
        counted: Callable[[str, float], None] = lambda outcome, seconds: None,
    ) -> None:
        self.queue = queue
        self.reconcile = reconcile
        self.name = name  # of the threads: name-0, name-1, ...
        self.what = what  # in the log line of a failure
        self.counted = counted  # ("ok" | "error", seconds) after each reconcile

    def start(self, count: int) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self.run, name=f"{self.name}-{i}", daemon=True)
            for i in range(count)
        ]
        for t in threads:
            t.start()
        return threads

    def run(self) -> None:
        """Reconcile keys until the queue is closed (the body of each thread)."""
        while (key := self.queue.get()) is not None:
            started = time.monotonic()
            try:
                again = self.reconcile(key)
            except Exception as exc:  # never let one object stop a reconcile thread
                delay = self.queue.retry_later(key)
                outcome = "error"
                log.warning("[%s/%s] %s failed, retrying in %.1fs: %s", *key, self.what, delay, exc)
            else:
                self.queue.forget(key)
                outcome = "ok"
                if again is not None:
                    self.queue.add(key, again)
            finally:
                self.queue.done(key)
            self.counted(outcome, time.monotonic() - started)


class FairLine(Generic[K]):
    """Keys waiting their turn, each at most once, first come first served: when
    more jobs report than status writes can follow, each job's turn comes
    within (jobs waiting / write rate), and none is starved by the others."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._order: deque[K] = deque()
        self._waiting: set[K] = set()
        self._closed = False

    def join(self, key: K) -> None:
        with self._cond:
            if key not in self._waiting:
                self._waiting.add(key)
                self._order.append(key)
                self._cond.notify()

    def next(self, timeout: float | None = None) -> K | None:
        """The key whose turn it is (leaving the line), or None on timeout/close."""
        with self._cond:
            if not self._order and not self._closed:
                self._cond.wait(timeout)
            if not self._order:
                return None
            key = self._order.popleft()
            self._waiting.discard(key)
            return key

    def __len__(self) -> int:
        with self._cond:
            return len(self._order)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class WriteBudget:
    """A token bucket shared by all reconcile threads: bounds the operator's API
    writes per second, so ten thousand jobs reporting at once queue up in the
    operator instead of overloading the API server."""

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def try_take(self, reserve: float = 0.0) -> bool:
        """Take a token if one is there beyond `reserve` (deferrable writes leave
        the reserve to writes that must go out, which so go first)."""
        with self._lock:
            self._refill()
            if self._tokens >= 1 + reserve - _EPSILON:
                self._tokens -= 1
                return True
            return False

    def take(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Take a token, waiting for it (for writes that must go out)."""
        while True:
            with self._lock:
                self._refill()
                if self._tokens >= 1 - _EPSILON:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            sleep(wait)
