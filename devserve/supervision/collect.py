"""Releasing retired thread-mode generations at a quiet moment, not in the request path.

After a thread-mode reload the retired generation (its replaced modules, app, loop) is cyclic
garbage. Workers freeze the start-up objects so that collections under load stay short
(``gc.freeze``), which would also keep that garbage forever, so it takes a full collection of
an unfrozen heap: 10 ms for a bare app, 100 ms and more for a framework project, with the GIL
held. Run right after the reload, it delayed the first request for the new code by as much. So
the collection waits until no request is in flight and none started for ``QUIET`` seconds (the
browser has its page), at most ``LATEST`` seconds (under steady load it must still happen), and
never while a reload runs; a reload that finds one still pending runs it first (saves in quick
succession: at most one retired generation waits at any time).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

QUIET = 0.05  # seconds without a request before collecting
LATEST = 2.0  # seconds after a reload by which the collection runs anyway
POLL = 0.01  # seconds between looks at the workers' activity

Activity = Callable[[], tuple[int, int]]  # (requests in flight, requests started so far)

logger = logging.getLogger("devserve.error")


def release_garbage() -> int:
    """Unfreeze, collect every unreachable object now, freeze what lives; returns how many
    objects were found unreachable."""
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    return found


class QuietCollector:
    """One daemon thread, started by the first :meth:`request`, that runs
    :func:`release_garbage` at the next quiet moment after each request."""

    def __init__(self, activity: Activity, busy: threading.Lock,
                 serving: Callable[[], int]) -> None:
        self._activity = activity
        self._busy = busy  # held while a reload runs
        self._serving = serving  # the serving generation's number
        self._wake = threading.Condition()
        self._due: float | None = None  # monotonic deadline of the pending collection
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        """A generation was retired: collect it soon (a pending collection keeps its deadline)."""
        with self._wake:
            if self._due is None:
                self._due = time.monotonic() + LATEST
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="devserve-collector",
                                                daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._due is None:
                    self._wake.wait()
                due = self._due
            self._wait_quiet(due)
            with self._busy:  # not during a reload (it would only slow the reload down)
                self.collect_pending()

    def collect_pending(self) -> None:
        """Collect now if a collection is pending (the caller holds *busy*): a reload that
        comes before a quiet moment does, so at most one retired generation waits at a time."""
        with self._wake:
            if self._due is None:
                return  # done already
            self._due = None  # what retires from here on gets the next collection
        started = time.monotonic()
        found = release_garbage()
        logger.debug("released the generations before %d: %d objects collected in %.1f ms",
                     self._serving(), found, (time.monotonic() - started) * 1000)

    def _wait_quiet(self, due: float) -> None:
        """Return once no request ran for ``QUIET`` seconds, or at *due*."""
        in_flight, seen = self._activity()
        quiet_since = time.monotonic() if in_flight == 0 else None
        while (now := time.monotonic()) < due:
            if quiet_since is not None and now - quiet_since >= QUIET:
                return
            time.sleep(POLL)
            in_flight, started = self._activity()
            if in_flight or started != seen:
                seen, quiet_since = started, None
            elif quiet_since is None:
                quiet_since = time.monotonic()
