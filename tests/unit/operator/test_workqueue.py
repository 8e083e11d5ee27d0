"""The work queue's contract: coalescing, never two reconciles of one key at a
time, delays (an earlier schedule wins), backoff, the reconcile loop that
serves every kind, and the write budget."""

from __future__ import annotations

import logging
import threading

import pytest

from kubetune_operator.workqueue import (
    BACKOFF_BASE_S,
    FairLine,
    ObjectKey,
    ReconcileThreads,
    WorkQueue,
    WriteBudget,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_many_adds_of_one_key_coalesce() -> None:
    q: WorkQueue[str] = WorkQueue()
    for _ in range(1000):
        q.add("a")
    q.add("b")
    assert q.depth() == 2
    assert [q.get(timeout=0), q.get(timeout=0), q.get(timeout=0)] == ["a", "b", None]


def test_a_key_added_while_processing_runs_once_more_after() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get(timeout=0) == "a"
    q.add("a")
    q.add("a")
    assert q.get(timeout=0) is None  # never handed out twice at the same time
    q.done("a")
    assert q.get(timeout=0) == "a"
    q.done("a")
    assert q.get(timeout=0) is None


def test_delays_and_the_earliest_schedule_wins() -> None:
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock=clock)
    q.add("a", 10)
    q.add("a", 5)
    q.add("a", 30)
    assert q.get(timeout=0) is None
    clock.now += 5
    assert q.get(timeout=0) == "a"
    q.done("a")
    clock.now += 30
    assert q.get(timeout=0) is None  # the later schedules were superseded


def test_an_immediate_add_beats_a_delay() -> None:
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock=clock)
    q.add("a", 60)
    q.add("a")
    assert q.get(timeout=0) == "a"


def test_backoff_doubles_and_is_capped_and_forgotten() -> None:
    q: WorkQueue[str] = WorkQueue(clock=Clock(), backoff_base_s=1, backoff_max_s=8)
    delays = [q.retry_later("a") for _ in range(6)]
    assert delays == [1, 2, 4, 8, 8, 8]
    q.forget("a")
    assert q.retry_later("a") == 1


def test_get_blocks_until_an_add() -> None:
    q: WorkQueue[str] = WorkQueue()
    got: list[str | None] = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    t.start()
    q.add("x")
    t.join(5)
    assert got == ["x"]


def test_close_wakes_waiters() -> None:
    q: WorkQueue[str] = WorkQueue()
    t = threading.Thread(target=q.get)
    t.start()
    q.close()
    t.join(5)
    assert not t.is_alive()


def test_write_budget_bounds_the_rate() -> None:
    clock = Clock()
    budget = WriteBudget(rate=10, burst=5, clock=clock)
    assert sum(budget.try_take() for _ in range(20)) == 5
    clock.now += 1
    assert sum(budget.try_take() for _ in range(20)) == 5  # refilled to the burst only

    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock.now += s

    budget.take(sleep)
    assert slept and abs(sum(slept) - 0.1) < 1e-9


def test_deferrable_writes_leave_a_reserve() -> None:
    clock = Clock()
    budget = WriteBudget(rate=10, burst=10, clock=clock)
    assert sum(budget.try_take(reserve=3) for _ in range(20)) == 7
    assert budget.try_take()  # what must go out still finds tokens


def test_urgent_keys_go_first_and_once() -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in ("p1", "p2", "p3"):
        q.add(key)
    q.add("new", urgent=True)
    q.add("p3", urgent=True)  # already queued: moves ahead, handed out once
    got = [q.get(timeout=0) for _ in range(5)]
    assert got == ["new", "p3", "p1", "p2", None]


def test_urgency_survives_processing() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get(timeout=0) == "a"
    q.add("b")
    q.add("a", urgent=True)  # changed while being reconciled
    q.done("a")
    assert q.get(timeout=0) == "a"


def test_fair_line_keeps_first_come_order_and_each_key_once() -> None:
    line: FairLine[str] = FairLine()
    for key in ("a", "b", "a", "c", "b"):
        line.join(key)
    assert [line.next(0), line.next(0), line.next(0), line.next(0)] == ["a", "b", "c", None]
    line.join("a")  # back in line after its turn
    assert line.next(0) == "a"


def test_the_reconcile_loop_backs_off_a_failure_and_looks_again_when_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    q: WorkQueue[ObjectKey] = WorkQueue(clock=clock)
    seen: list[ObjectKey] = []
    counted: list[str] = []

    def reconcile(key: ObjectKey) -> float | None:
        seen.append(key)
        if key[1] == "bad":
            raise RuntimeError("boom")
        if key[1] == "last":
            q.close()  # the loop ends once this reconcile is done
        return 5.0 if key[1] == "again" else None

    for name in ("bad", "again", "ok", "last"):
        q.add(("ns", name))
    loop = ReconcileThreads(
        q, reconcile, name="t", what="sweep reconcile", counted=lambda o, _: counted.append(o)
    )
    with caplog.at_level(logging.WARNING, logger="kubetune_operator"):
        loop.run()  # never raises: one object never stops a thread
    assert [name for _, name in seen] == ["bad", "again", "ok", "last"]
    assert counted == ["error", "ok", "ok", "ok"]
    assert "[ns/bad] sweep reconcile failed, retrying in 0.5s: boom" in caplog.text
    assert q.depth() == 2  # the failure after its backoff, "again" after 5 s
    assert q.retry_later(("ns", "bad")) == 2 * BACKOFF_BASE_S  # its second failure in a row


def test_a_successful_reconcile_forgets_the_keys_failures() -> None:
    clock = Clock()
    q: WorkQueue[ObjectKey] = WorkQueue(clock=clock)
    assert q.retry_later(("ns", "j")) == BACKOFF_BASE_S  # an earlier reconcile failed
    clock.now += BACKOFF_BASE_S

    def reconcile(key: ObjectKey) -> float | None:
        q.close()
        return None

    ReconcileThreads(q, reconcile, name="t").run()
    assert q.retry_later(("ns", "j")) == BACKOFF_BASE_S  # not 2x: the success reset it


def test_reconcile_threads_are_named_and_end_when_the_queue_closes() -> None:
    q: WorkQueue[ObjectKey] = WorkQueue()
    done = threading.Event()

    def reconcile(key: ObjectKey) -> float | None:
        done.set()
        return None

    threads = ReconcileThreads(q, reconcile, name="kubetune-sweep").start(2)
    assert [t.name for t in threads] == ["kubetune-sweep-0", "kubetune-sweep-1"]
    q.add(("ns", "s"))
    assert done.wait(5)
    q.close()
    for t in threads:
        t.join(5)
        assert not t.is_alive()
