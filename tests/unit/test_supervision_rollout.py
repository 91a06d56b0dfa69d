"""The worker state machine with plain values: ``step(status, event) -> (status, commands)``;
time is always passed in."""

from __future__ import annotations

import pytest

from devserve.supervision.rollout import (
    DEAD,
    LIVE,
    BecameReady,
    ChargeBudget,
    Charged,
    Exited,
    GiveUp,
    Promoted,
    ReportRetired,
    Respawn,
    ScheduleRespawn,
    Status,
    StopAsked,
    Tick,
    WorkerEvent,
    WorkerState,
    step,
)

S = WorkerState


def run(status: Status, *events: WorkerEvent) -> tuple[Status, list[object]]:
    commands: list[object] = []
    for event in events:
        status, out = step(status, event)
        commands.extend(out)
    return status, commands


def test_a_worker_starts_becomes_ready_and_serves_once_promoted() -> None:
    status, commands = run(Status(), BecameReady())
    assert status == Status(S.READY) and commands == []
    status, commands = run(status, Promoted())
    assert status == Status(S.SERVING) and commands == []


def test_promotion_before_the_ready_report_still_serves() -> None:
    """A respawned worker may be promoted while its readiness is being forwarded."""
    assert run(Status(), Promoted(), BecameReady()) == (Status(S.SERVING), [])


@pytest.mark.parametrize("state", sorted(LIVE, key=lambda s: s.value))
def test_a_live_worker_asked_to_stop_drains_and_its_exit_is_no_crash(state: WorkerState
                                                                      ) -> None:
    status, commands = run(Status(state), StopAsked())
    assert status == Status(S.DRAINING) and commands == []
    status, commands = run(status, Exited(clean=False))
    assert status == Status(S.STOPPED) and commands == []


def test_readiness_after_a_stop_changes_nothing() -> None:
    assert run(Status(), StopAsked(), BecameReady(), Promoted()) == (Status(S.DRAINING), [])


def test_a_clean_exit_unasked_retires_and_respawns_at_once_without_a_charge() -> None:
    status, commands = run(Status(S.SERVING), Exited(clean=True))
    assert status == Status(S.RETIRED)
    assert commands == [ReportRetired(), Respawn()]
    # Until the respawn happens (a reload may hold the lock), every tick asks again.
    assert run(status, Tick(100.0)) == (status, [Respawn()])


def test_a_crash_charges_the_budget_then_backs_off_until_the_respawn_is_due() -> None:
    status, commands = run(Status(S.SERVING), Exited(clean=False))
    assert status == Status(S.CRASHED) and commands == [ChargeBudget()]
    status, commands = run(status, Charged(allowed=True, backoff=0.5, now=10.0))
    assert status == Status(S.BACKOFF, respawn_at=10.5)
    assert commands == [ScheduleRespawn(0.5)]
    assert run(status, Tick(10.49)) == (status, [])
    assert run(status, Tick(10.5)) == (status, [Respawn()])
    assert run(status, Tick(11.0)) == (status, [Respawn()])  # still due: asked again


def test_a_crash_during_start_up_is_a_crash_too() -> None:
    assert run(Status(), Exited(clean=False)) == (Status(S.CRASHED), [ChargeBudget()])


def test_an_exhausted_budget_fails_the_slot_for_good() -> None:
    status, commands = run(Status(S.SERVING), Exited(clean=False),
                           Charged(allowed=False, backoff=0.0, now=5.0))
    assert status == Status(S.FAILED)
    assert commands == [ChargeBudget(), GiveUp()]
    assert run(status, Tick(1e9), Exited(clean=False)) == (status, [])


@pytest.mark.parametrize("state", sorted(DEAD, key=lambda s: s.value))
def test_stopping_a_dead_worker_cancels_any_respawn(state: WorkerState) -> None:
    status, commands = run(Status(state, respawn_at=1.0), StopAsked())
    assert status == Status(S.STOPPED) and commands == []
    assert run(status, Tick(2.0)) == (status, [])


def test_repeated_observations_of_a_dead_worker_are_harmless() -> None:
    status, _ = run(Status(S.SERVING), Exited(clean=False))
    for event in (Exited(clean=False), Exited(clean=True), BecameReady(), Promoted()):
        assert step(status, event) == (status, ())
    status, _ = run(status, Charged(allowed=True, backoff=1.0, now=0.0))
    assert step(status, Charged(allowed=False, backoff=0.0, now=0.5)) == (status, ())
    assert step(status, Exited(clean=False)) == (status, ())


def test_stopped_is_final() -> None:
    status = Status(S.STOPPED)
    for event in (BecameReady(), Promoted(), StopAsked(), Exited(clean=False),
                  Charged(allowed=True, backoff=0.0, now=0.0), Tick(0.0)):
        assert step(status, event) == (status, ())
