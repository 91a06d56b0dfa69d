"""The serialised runner for reloads and restarts: one at a time, nothing lost, nothing doubled.

``run(job)`` while nothing runs: runs *job* now, in the caller's thread, under the lifecycle
lock. ``run(job)`` while a job runs: records *job* as the one follow-up (a later request
replaces an earlier one: a reload asked for twice during a reload is one more reload) and
returns at once; the running caller runs the follow-up when its job ends. The decision "is there
a follow-up, or am I done" and the release of "running" happen in one critical section, so a
request arriving at that moment either becomes the follow-up or finds the runner idle — never
neither. Once the Supervisor stops, nothing more runs.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Collection
from pathlib import Path

Job = Callable[[], None]


class Phase(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    RUNNING_WITH_FOLLOW_UP = "running-with-follow-up"


class Coalescer:
    """Runs jobs under *lock* one at a time; see the module docstring for the rules."""

    def __init__(self, lock: threading.Lock, stopped: Callable[[], bool]) -> None:
        self._lock = lock  # the lifecycle lock: crash respawns take it too
        self._stopped = stopped
        self._guard = threading.Lock()  # protects _phase and _follow_up only
        self._phase = Phase.IDLE
        self._follow_up: Job | None = None

    @property
    def phase(self) -> Phase:
        return self._phase

    def run(self, job: Job) -> None:
        with self._guard:
            if self._phase is not Phase.IDLE:
                self._phase, self._follow_up = Phase.RUNNING_WITH_FOLLOW_UP, job
                return
            self._phase = Phase.RUNNING
        try:
            while not self._stopped():
                with self._lock:
                    if not self._stopped():
                        job()
                with self._guard:
                    if self._follow_up is None:
                        self._phase = Phase.IDLE
                        return
                    job, self._follow_up = self._follow_up, None
                    self._phase = Phase.RUNNING
        except BaseException:
            self._reset()
            raise
        self._reset()  # stopped: a follow-up is dropped

    def _reset(self) -> None:
        """Only the running caller resets (while RUNNING nobody else can start)."""
        with self._guard:
            self._phase, self._follow_up = Phase.IDLE, None


class PendingChanges:
    """The files changed since the last reload ran: every request adds its batch, the reload
    that runs takes them all (a coalesced follow-up serves every batch, none is lost). ``None``
    stands for "everything" (a manual reload, an ``--env-file`` edit) and absorbs any batch."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._paths: set[Path] | None = set()

    def add(self, changed: Collection[Path] | None) -> None:
        with self._guard:
            if changed is None:
                self._paths = None
            elif self._paths is not None:
                self._paths.update(changed)

    def take(self) -> frozenset[Path] | None:
        with self._guard:
            paths, self._paths = self._paths, set()
        return None if paths is None else frozenset(paths)
