"""Crash-restart budget of one worker *slot*: a sliding window plus exponential backoff.

It belongs to the slot, not to the worker handle, so it survives respawns; time is passed in so
the rules are tested without clocks or sleeps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """What to do about one crash: respawn after ``backoff`` seconds, or give up."""

    allowed: bool
    restarts_used: int
    budget: int
    backoff: float


class CrashBudget:
    """At most ``max_restarts`` respawns in any ``window`` seconds; backoff doubles per crash."""

    def __init__(
        self,
        max_restarts: int = 5,
        window: float = 60.0,
        base_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.max_restarts = max_restarts
        self.window = window
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self._restarts: deque[float] = deque()
        self.failed = False

    def _expire(self, now: float) -> None:
        while self._restarts and now - self._restarts[0] > self.window:
            self._restarts.popleft()

    def used(self, now: float) -> int:
        self._expire(now)
        return len(self._restarts)

    def on_crash(self, now: float) -> RestartDecision:
        """Record a crash at *now* and decide whether (and after what backoff) to respawn."""
        self._expire(now)
        used = len(self._restarts)
        if self.failed or used >= self.max_restarts:
            self.failed = True
            return RestartDecision(False, used, self.max_restarts, 0.0)
        backoff = min(self.base_backoff * (2**used), self.max_backoff)
        self._restarts.append(now)
        return RestartDecision(True, used + 1, self.max_restarts, backoff)

    def reset(self) -> None:
        """Forget past crashes (a successful reload gives the slot a clean slate)."""
        self._restarts.clear()
        self.failed = False
