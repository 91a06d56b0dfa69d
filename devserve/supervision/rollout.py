"""The life of one worker, as a pure state machine: ``step(status, event) -> (status, commands)``.

Rules (the Supervisor observes; this module decides; time is passed in, as in ``budget.py``):

- A worker is STARTING until it reports ready (READY); it is SERVING once its generation is
  promoted. Asking it to stop (reload drain, shutdown, discard) makes it DRAINING; its exit
  is then expected and it ends STOPPED.
- Exiting unasked is RETIRED when clean (``--limit-max-requests``: replace it now, no charge)
  and CRASHED otherwise: the slot's crash budget is charged (:class:`ChargeBudget`), and the
  answer (:class:`Charged`) makes it BACKOFF (respawn due at ``respawn_at``) or FAILED.
- A RETIRED worker, or a BACKOFF one whose time has come, asks for a :class:`Respawn` on every
  :class:`Tick` until one happens (a respawn waits while a reload holds the lifecycle lock).
- Stopping a dead worker (a reload over a crashed or failed slot) cancels any respawn: STOPPED.
- Events that do not apply to a state leave it unchanged, so late or repeated observations
  (a second look at a dead worker, readiness after a stop) are harmless.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class WorkerState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"
    RETIRED = "retired"
    CRASHED = "crashed"
    BACKOFF = "backoff"
    FAILED = "failed"


LIVE = frozenset({WorkerState.STARTING, WorkerState.READY, WorkerState.SERVING})
DEAD = frozenset({WorkerState.RETIRED, WorkerState.CRASHED, WorkerState.BACKOFF,
                  WorkerState.FAILED})


@dataclass(frozen=True, slots=True)
class Status:
    state: WorkerState = WorkerState.STARTING
    respawn_at: float | None = None  # BACKOFF only: when the respawn is due


# -- events (what the Supervisor observed) ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BecameReady:
    pass


@dataclass(frozen=True, slots=True)
class Promoted:
    pass


@dataclass(frozen=True, slots=True)
class StopAsked:
    pass


@dataclass(frozen=True, slots=True)
class Exited:
    clean: bool  # exited by itself without error (retired), as opposed to a crash


@dataclass(frozen=True, slots=True)
class Charged:
    """The crash budget's answer: respawn after *backoff* seconds, or give up."""

    allowed: bool
    backoff: float
    now: float


@dataclass(frozen=True, slots=True)
class Tick:
    now: float


WorkerEvent = BecameReady | Promoted | StopAsked | Exited | Charged | Tick


# -- commands (what the Supervisor must do) -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class ChargeBudget:
    """Report the crash and charge the slot's budget; answer with :class:`Charged`."""


@dataclass(frozen=True, slots=True)
class ReportRetired:
    pass


@dataclass(frozen=True, slots=True)
class ScheduleRespawn:
    backoff: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The budget is exhausted: the slot stays empty (until a reload gives it a fresh one)."""


@dataclass(frozen=True, slots=True)
class Respawn:
    pass


Command = ChargeBudget | ReportRetired | ScheduleRespawn | GiveUp | Respawn

_NOTHING: tuple[Command, ...] = ()


def step(status: Status, event: WorkerEvent) -> tuple[Status, tuple[Command, ...]]:
    """The next status of a worker after *event*, and what to do about it."""
    state = status.state
    if isinstance(event, StopAsked):
        if state in LIVE:
            return Status(WorkerState.DRAINING), _NOTHING
        if state in DEAD:
            return Status(WorkerState.STOPPED), _NOTHING
        return status, _NOTHING
    if isinstance(event, BecameReady):
        return (Status(WorkerState.READY) if state is WorkerState.STARTING else status), _NOTHING
    if isinstance(event, Promoted):
        if state in (WorkerState.STARTING, WorkerState.READY):
            return Status(WorkerState.SERVING), _NOTHING
        return status, _NOTHING
    if isinstance(event, Exited):
        if state is WorkerState.DRAINING:
            return Status(WorkerState.STOPPED), _NOTHING
        if state not in LIVE:
            return status, _NOTHING
        if event.clean:
            return Status(WorkerState.RETIRED), (ReportRetired(), Respawn())
        return Status(WorkerState.CRASHED), (ChargeBudget(),)
    if isinstance(event, Charged):
        if state is not WorkerState.CRASHED:
            return status, _NOTHING
        if event.allowed:
            return (Status(WorkerState.BACKOFF, event.now + event.backoff),
                    (ScheduleRespawn(event.backoff),))
        return Status(WorkerState.FAILED), (GiveUp(),)
    # Tick
    if state is WorkerState.RETIRED:
        return status, (Respawn(),)
    if (state is WorkerState.BACKOFF and status.respawn_at is not None
            and event.now >= status.respawn_at):
        return status, (Respawn(),)
    return status, _NOTHING
