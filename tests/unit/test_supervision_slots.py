"""The one crash/respawn path of worker slots, with real handles on real threads (and a real
process for a clean exit); time is passed in to ``tick``."""

from __future__ import annotations

import logging
import multiprocessing
import sys
import threading
from collections.abc import Iterator

import pytest

from devserve.lifecycle import (
    RecordingCollector,
    WorkerBudgetExhausted,
    WorkerCrashed,
    WorkerRespawnScheduled,
)
from devserve.supervision.handles import _WorkerHandle
from devserve.supervision.rollout import Promoted, WorkerState
from devserve.supervision.slots import SlotGroup

S = WorkerState


class Harness:
    """A SlotGroup whose respawn starts a fresh live thread in the slot."""

    def __init__(self, slots: int = 1, row_offset: int = 0) -> None:
        self.collector = RecordingCollector()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.ends: list[threading.Event] = []  # one per live worker thread
        self.respawned: list[int] = []
        self.all_failed: list[str] = []
        self.group = SlotGroup[_WorkerHandle](
            lock=self.lock, emit=self.collector.emit, respawn=self.respawn,
            stopping=self.stopping.is_set, row_offset=row_offset,
            on_all_failed=self.all_failed.append)
        for index in range(slots):
            self.group.place(index, self.serving(index))

    def serving(self, index: int) -> _WorkerHandle:
        end = threading.Event()
        self.ends.append(end)
        thread = threading.Thread(target=end.wait, name=f"w{index}", daemon=True)
        thread.start()
        handle = _WorkerHandle(index, thread, None, generation=1)
        handle.mark_ready()
        handle.apply(Promoted())
        return handle

    def respawn(self, index: int) -> None:
        assert self.lock.locked(), "respawns run under the lifecycle lock"
        self.respawned.append(index)
        self.group.place(index, self.serving(index))

    def crash(self, index: int) -> _WorkerHandle:
        """Replace slot *index*'s worker by one whose thread died unasked."""
        thread = threading.Thread(target=lambda: None, name=f"dead{index}")
        thread.start()
        thread.join()
        handle = _WorkerHandle(index, thread, None, generation=1)
        handle.mark_ready()
        handle.apply(Promoted())
        self.group.place(index, handle)
        return handle

    def release(self) -> None:
        for end in self.ends:
            end.set()

    def handle(self, index: int) -> _WorkerHandle:
        handle = self.group.get(index)
        assert handle is not None
        return handle


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness(slots=2)
    yield h
    h.release()


def test_a_crash_is_reported_and_the_respawn_waits_for_the_backoff(harness: Harness) -> None:
    dead = harness.crash(0)
    harness.group.tick(100.0)
    assert dead.state is S.BACKOFF
    crashed, scheduled = harness.collector.events
    assert crashed == WorkerCrashed(ts=crashed.ts, slot=0, generation=1, reason="thread died")
    assert isinstance(scheduled, WorkerRespawnScheduled)
    assert (scheduled.slot, scheduled.restarts_used, scheduled.budget, scheduled.backoff) == (
        0, 1, 5, 0.5)
    assert harness.group.last_crash == "slot 0 (dead0): thread died"
    harness.group.tick(100.4)
    assert harness.respawned == []
    harness.group.tick(100.5)
    assert harness.respawned == [0]
    assert harness.handle(0).state is S.SERVING and harness.handle(0).is_alive()
    assert harness.handle(1).state is S.SERVING  # the other slot was never touched
    assert len(harness.collector.events) == 2  # nothing more to say


def test_the_budget_belongs_to_the_slot_and_survives_respawns(harness: Harness) -> None:
    now = 0.0
    backoffs = []
    for _ in range(5):
        harness.crash(0)
        harness.group.tick(now)
        event = harness.collector.events[-1]
        assert isinstance(event, WorkerRespawnScheduled)
        backoffs.append(event.backoff)
        now += event.backoff
        harness.group.tick(now)
    assert backoffs == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert harness.respawned == [0] * 5
    harness.crash(0)
    harness.group.tick(now)
    exhausted = harness.collector.events[-1]
    assert isinstance(exhausted, WorkerBudgetExhausted)
    assert (exhausted.slot, exhausted.restarts_used, exhausted.budget) == (0, 5, 5)
    assert harness.handle(0).state is S.FAILED
    harness.group.tick(now + 1000)
    assert harness.respawned == [0] * 5  # a failed slot stays empty
    assert harness.all_failed == []  # slot 1 still serves


def test_when_every_slot_failed_it_is_said_once_with_the_last_crash() -> None:
    harness = Harness(slots=2)
    try:
        for slot in (0, 1):
            harness.group.place(slot, harness.serving(slot))
            harness.group._slots[slot].budget.max_restarts = 0  # the first crash exhausts it
        harness.crash(0)
        harness.group.tick(1.0)
        assert harness.all_failed == []
        harness.crash(1)
        harness.group.tick(2.0)
        harness.group.tick(3.0)
        assert harness.all_failed == [
            "Every worker slot exhausted its restart budget; last crash: "
            "slot 1 (dead1): thread died"]
    finally:
        harness.release()


def test_a_respawn_waits_while_a_reload_holds_the_lock(harness: Harness) -> None:
    harness.crash(1)
    harness.group.tick(10.0)
    with harness.lock:
        harness.group.tick(11.0)  # due, but the lock is taken
        assert harness.respawned == []
    harness.group.tick(11.1)
    assert harness.respawned == [1]


def test_a_worker_asked_to_stop_exits_without_a_crash(harness: Harness) -> None:
    handle = harness.handle(0)
    handle.start_draining(1.0)
    assert handle.state is S.DRAINING
    harness.ends[0].set()  # slot 0's worker thread only
    handle.target.join(5)
    harness.group.tick(1.0)
    harness.group.tick(100.0)
    assert handle.state is S.STOPPED
    assert harness.collector.events == [] and harness.respawned == []


def test_nothing_is_respawned_once_the_supervisor_stops(harness: Harness) -> None:
    harness.crash(0)
    harness.group.tick(0.0)
    harness.stopping.set()
    harness.group.tick(10.0)
    assert harness.respawned == []


def test_a_clean_exit_retires_and_is_replaced_at_once_without_a_charge(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    process = multiprocessing.get_context("spawn").Process(target=sys.exit, args=(0,))
    process.start()
    process.join(30)
    handle = _WorkerHandle(1, process, None, generation=1)
    handle.mark_ready()
    handle.apply(Promoted())
    harness.group.place(1, handle)
    with caplog.at_level(logging.INFO, logger="devserve.error"):
        harness.group.tick(5.0)
    assert handle.state is S.RETIRED
    assert harness.respawned == [1]
    assert harness.collector.events == []  # no crash, no budget charged
    assert harness.group._slots[1].budget.used(5.0) == 0
    assert "Worker 1 retired after --limit-max-requests; replacing it" in caplog.text


def test_http3_slots_report_on_their_own_rows() -> None:
    harness = Harness(slots=1, row_offset=4)
    try:
        harness.crash(0)
        harness.group.tick(1.0)
        crashed, scheduled = harness.collector.events
        assert isinstance(crashed, WorkerCrashed) and crashed.slot == 4
        assert isinstance(scheduled, WorkerRespawnScheduled) and scheduled.slot == 4
    finally:
        harness.release()


def test_a_successful_reload_forgives_past_crashes(harness: Harness) -> None:
    harness.crash(0)
    harness.group.tick(0.0)
    harness.group.tick(0.5)
    assert harness.group._slots[0].budget.used(1.0) == 1
    harness.group.replace({0: harness.serving(0), 1: harness.serving(1)}, fresh_budgets=True)
    assert harness.group._slots[0].budget.used(1.0) == 0
    harness.group.replace({0: harness.serving(0)}, fresh_budgets=False)
    assert sorted(harness.group.handles()) == [0]
