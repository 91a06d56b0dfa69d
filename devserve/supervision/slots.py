"""Worker slots and their ONE crash/respawn path, used for TCP slots and HTTP/3 sockets alike.

A slot is a place for one worker: slot *i* of every generation, or the HTTP/3 worker of UDP
socket *i*. Its crash budget (:class:`CrashBudget`) belongs to the slot, not to the handle, so
it survives respawns. On each :meth:`SlotGroup.tick` a dead worker is reported to its state
machine (:mod:`.rollout`) and the commands it answers are carried out here: report the crash
and charge the budget, schedule the respawn after the backoff, give up, or respawn now. A
respawn is serialised with reloads through the lifecycle lock and simply waits for a later
tick while a reload holds it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from devserve.lifecycle import (
    Event,
    WorkerBudgetExhausted,
    WorkerCrashed,
    WorkerRespawnScheduled,
)
from devserve.supervision.budget import CrashBudget
from devserve.supervision.handles import _Handle
from devserve.supervision.rollout import (
    ChargeBudget,
    Charged,
    Command,
    Exited,
    GiveUp,
    ReportRetired,
    Respawn,
    ScheduleRespawn,
    Tick,
    WorkerState,
)

logger = logging.getLogger("devserve.error")

H = TypeVar("H", bound=_Handle)


class Slot(Generic[H]):
    """One place for a worker: its current handle and its crash budget."""

    def __init__(self, index: int, handle: H, budget: CrashBudget) -> None:
        self.index = index
        self.handle = handle
        self.budget = budget


class SlotGroup(Generic[H]):
    """The slots of one kind of worker; *row_offset* puts them on their own dashboard rows
    (HTTP/3 workers come after the TCP slots)."""

    def __init__(
        self,
        *,
        lock: threading.Lock,
        emit: Callable[[Event], None],
        respawn: Callable[[int], None],
        stopping: Callable[[], bool],
        row_offset: int = 0,
        on_all_failed: Callable[[str], None] | None = None,
    ) -> None:
        self._lock = lock  # the Supervisor's lifecycle lock
        self._emit = emit
        self._respawn = respawn
        self._stopping = stopping
        self.row_offset = row_offset
        self._on_all_failed = on_all_failed
        self._slots: dict[int, Slot[H]] = {}
        self.last_crash: str | None = None

    # -- contents --------------------------------------------------------------------------
    def handles(self) -> dict[int, H]:
        return {index: slot.handle for index, slot in self._slots.items()}

    def get(self, index: int) -> H | None:
        slot = self._slots.get(index)
        return None if slot is None else slot.handle

    def place(self, index: int, handle: H) -> None:
        """Put *handle* in slot *index* (a new one gets a fresh budget; a respawn keeps it)."""
        slot = self._slots.get(index)
        if slot is None:
            self._slots[index] = Slot(index, handle, CrashBudget())
        else:
            slot.handle = handle

    def replace(self, handles: dict[int, H], *, fresh_budgets: bool) -> None:
        """A promoted generation takes every slot; a successful reload forgives past crashes."""
        for index, handle in handles.items():
            self.place(index, handle)
            if fresh_budgets:
                self._slots[index].budget.reset()
        for index in set(self._slots) - set(handles):
            del self._slots[index]

    def clear(self) -> None:
        self._slots.clear()

    # -- the crash/respawn path ------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Look at every slot once: report dead workers, respawn the ones that are due."""
        for slot in list(self._slots.values()):
            handle = slot.handle
            if not handle.is_alive():
                self._carry_out(slot, handle.apply(Exited(clean=handle.exited_cleanly())), now)
            self._carry_out(slot, handle.apply(Tick(now)), now)

    def respawn_now(self, index: int) -> None:
        """Respawn slot *index* if its worker is dead and not stopped on purpose; skipped (the
        next tick retries) while a reload or restart holds the lifecycle lock."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            handle = self.get(index)
            if (handle is None or handle.is_alive() or handle.expected_exit
                    or handle.state is WorkerState.FAILED or self._stopping()):
                return
            self._respawn(index)
        finally:
            self._lock.release()

    def _carry_out(self, slot: Slot[H], commands: tuple[Command, ...], now: float) -> None:
        for command in commands:
            if isinstance(command, ChargeBudget):
                self._charge(slot, now)
            elif isinstance(command, ReportRetired):
                logger.info("Worker %d retired after --limit-max-requests; replacing it",
                            slot.index + self.row_offset)
            elif isinstance(command, Respawn):
                self.respawn_now(slot.index)

    def _charge(self, slot: Slot[H], now: float) -> None:
        handle, row = slot.handle, slot.index + self.row_offset
        reason = handle.exit_reason()
        self.last_crash = f"slot {row} ({handle.ident}): {reason}"
        self._emit(WorkerCrashed(slot=row, generation=handle.generation, reason=reason,
                                 traceback=handle.error_traceback))
        decision = slot.budget.on_crash(now)
        for command in handle.apply(Charged(decision.allowed, decision.backoff, now)):
            if isinstance(command, ScheduleRespawn):
                self._emit(WorkerRespawnScheduled(
                    slot=row, ident=handle.ident, reason=reason,
                    restarts_used=decision.restarts_used, budget=decision.budget,
                    window=slot.budget.window, backoff=command.backoff))
            elif isinstance(command, GiveUp):
                self._emit(WorkerBudgetExhausted(
                    slot=row, restarts_used=decision.restarts_used, budget=decision.budget,
                    reason=reason, window=slot.budget.window))
                self._check_all_failed()

    def _check_all_failed(self) -> None:
        slots = list(self._slots.values())
        if (self._on_all_failed is not None and slots
                and all(s.handle.state is WorkerState.FAILED for s in slots)):
            self._on_all_failed("Every worker slot exhausted its restart budget; last crash: "
                                f"{self.last_crash}")
