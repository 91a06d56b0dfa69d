"""The serialised reload/restart runner with real threads: one job at a time, a request made
meanwhile coalesced into exactly one follow-up, never lost, nothing after a stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from devserve.supervision.coalesce import Coalescer, PendingChanges, Phase


def make(stopped: threading.Event | None = None) -> tuple[Coalescer, threading.Lock]:
    lock = threading.Lock()
    flag = stopped or threading.Event()
    return Coalescer(lock, flag.is_set), lock


def test_an_idle_runner_runs_the_job_at_once_under_the_lock() -> None:
    runner, lock = make()
    seen: list[bool] = []
    runner.run(lambda: seen.append(lock.locked()))
    assert seen == [True]
    assert runner.phase is Phase.IDLE and not lock.locked()


def test_requests_made_while_one_runs_are_coalesced_into_one_follow_up() -> None:
    runner, _ = make()
    release = threading.Event()
    running = threading.Event()
    active = 0
    max_active = 0
    runs: list[str] = []
    count_lock = threading.Lock()

    def job(name: str, block: bool = False) -> Callable[[], None]:
        def run() -> None:
            nonlocal active, max_active
            with count_lock:
                active += 1
                max_active = max(max_active, active)
            runs.append(name)
            if block:
                running.set()
                assert release.wait(10)
            with count_lock:
                active -= 1
        return run

    first = threading.Thread(target=runner.run, args=(job("first", block=True),))
    first.start()
    assert running.wait(10)
    queued = [threading.Thread(target=runner.run, args=(job(f"q{i}"),)) for i in range(5)]
    for t in queued:
        t.start()
    for t in queued:
        t.join(5)  # they queue and return while the first one still runs
    assert not any(t.is_alive() for t in queued)
    assert runs == ["first"]
    assert runner.phase is Phase.RUNNING_WITH_FOLLOW_UP
    release.set()
    first.join(10)
    assert not first.is_alive()
    assert len(runs) == 2, runs  # exactly one follow-up for the five requests
    assert runs[1].startswith("q")
    assert max_active == 1
    # Idle again: the next request runs at once, in the caller's thread.
    runner.run(job("later"))
    assert runs[-1] == "later"


class YieldingLock:
    """A real lock that gives up the CPU right after each release, as a preempting scheduler
    may at any moment. It changes no semantics; it only makes one interleaving likely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> YieldingLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        time.sleep(0.002)


def test_a_request_arriving_as_the_running_one_finishes_is_not_lost() -> None:
    """The request made right after the running job checked for a follow-up must still run
    (by the runner, or by its own caller)."""
    runner, _ = make()
    runner._guard = YieldingLock()  # type: ignore[assignment]
    lost = 0
    for _ in range(20):
        first_ran = threading.Event()
        second_runs: list[int] = []

        def second_caller(done: threading.Event = first_ran, out: list[int] = second_runs
                          ) -> None:
            assert done.wait(10)
            runner.run(lambda: out.append(1))

        t2 = threading.Thread(target=second_caller)
        t2.start()
        t1 = threading.Thread(target=runner.run, args=(first_ran.set,))
        t1.start()
        t1.join(10)
        t2.join(10)
        assert not t1.is_alive() and not t2.is_alive()
        if not second_runs:
            lost += 1
    assert lost == 0, f"{lost} of 20 requests made while a job finished never ran"


def test_nothing_runs_once_stopped_and_a_pending_follow_up_is_dropped() -> None:
    stopped = threading.Event()
    runner, _ = make(stopped)
    release = threading.Event()
    running = threading.Event()
    runs: list[str] = []

    def blocking() -> None:
        runs.append("first")
        running.set()
        assert release.wait(10)

    first = threading.Thread(target=runner.run, args=(blocking,))
    first.start()
    assert running.wait(10)
    runner.run(lambda: runs.append("follow-up"))
    stopped.set()
    release.set()
    first.join(10)
    assert runs == ["first"]
    assert runner.phase is Phase.IDLE
    runner.run(lambda: runs.append("after"))
    assert runs == ["first"]


def test_a_failing_job_leaves_the_runner_idle() -> None:
    runner, lock = make()

    def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        runner.run(boom)
    assert runner.phase is Phase.IDLE and not lock.locked()
    ran: list[int] = []
    runner.run(lambda: ran.append(1))
    assert ran == [1]


class AnnouncingLock:
    """A real lock that announces when someone starts waiting for it (a readiness signal)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting = threading.Event()

    def __enter__(self) -> AnnouncingLock:
        self.waiting.set()
        self.lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_the_lock_shared_with_crash_respawns_serialises_them_too() -> None:
    """A respawn holding the lifecycle lock delays a reload; it never runs beside it."""
    lock = AnnouncingLock()
    runner = Coalescer(lock, lambda: False)  # type: ignore[arg-type]
    order: list[str] = []
    with lock.lock:  # the respawn holds it
        t = threading.Thread(target=runner.run, args=(lambda: order.append("reload"),))
        t.start()
        assert lock.waiting.wait(10)  # the reload took the job and waits for the lock
        assert runner.phase is Phase.RUNNING and order == []
        order.append("respawn")
    t.join(10)
    assert order == ["respawn", "reload"]


def test_pending_changes_merge_every_batch_until_taken() -> None:
    """A coalesced follow-up reload serves every batch asked for meanwhile, none lost."""
    pending = PendingChanges()
    pending.add([Path("/p/a.py")])
    pending.add([Path("/p/b.py"), Path("/p/a.py")])
    assert pending.take() == {Path("/p/a.py"), Path("/p/b.py")}
    assert pending.take() == frozenset()  # taken: the next reload starts empty


def test_pending_changes_everything_absorbs_batches() -> None:
    pending = PendingChanges()
    pending.add([Path("/p/a.py")])
    pending.add(None)  # a manual reload: everything
    pending.add([Path("/p/b.py")])
    assert pending.take() is None
    pending.add([Path("/p/c.py")])
    assert pending.take() == {Path("/p/c.py")}
