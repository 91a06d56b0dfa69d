"""Process signals and the stop request they (and keys, and an exhausted budget) make.

SIGINT and SIGTERM stop the server; a second SIGINT forces (stop waiting for drains); SIGHUP
asks for a graceful reload. SIGTERM (what orchestrators send) honours ``--shutdown-delay``;
SIGINT (a person at the terminal) skips it, and cuts a delay already running short. Signal
handlers can only be installed on the main thread; when the Supervisor runs elsewhere (inside
``devserve.server``), the caller handles signals and calls the Supervisor's public methods
instead. POSIX-only signals are guarded (SIGHUP on Windows).
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable
from typing import Any

from devserve.lifecycle import Event, ServerStopping


class StopRequest:
    """"Stop", "skip the shutdown delay" and "stop now" as thread-safe facts, and the one
    ServerStopping per run, whoever asked first (a signal, a key, an exhausted budget)."""

    def __init__(self, emit: Callable[[Event], None]) -> None:
        self._emit = emit
        self._stop = threading.Event()
        self._undelayed = threading.Event()  # no (more) shutdown delay
        self._force = threading.Event()
        self._announced = threading.Lock()  # held once the ServerStopping went out

    @property
    def requested(self) -> bool:
        return self._stop.is_set()

    @property
    def forced(self) -> bool:
        return self._force.is_set()

    @property
    def undelayed(self) -> bool:
        return self._undelayed.is_set()

    def request(self, *, skip_delay: bool = False) -> None:
        if skip_delay:
            self._undelayed.set()
        self._stop.set()

    def force(self) -> None:
        self._force.set()
        self._undelayed.set()
        self._stop.set()

    def wait_delay(self, seconds: float) -> None:
        """Sleep through the shutdown delay, or less if a SIGINT or a forced stop says so."""
        self._undelayed.wait(seconds)

    def wait(self, timeout: float) -> bool:
        """Sleep up to *timeout* seconds; True as soon as a stop was requested."""
        return self._stop.wait(timeout)

    def wait_forced(self, timeout: float) -> bool:
        """Sleep up to *timeout* seconds; True as soon as "stop now" was asked for."""
        return self._force.wait(timeout)

    def announce(self, reason: str, *, error: bool = False) -> None:
        """Emit ServerStopping(*reason*) unless one was emitted already."""
        if self._announced.acquire(blocking=False):
            self._emit(ServerStopping(reason=reason, error=error))


def install_signals(*, stop: Callable[[str], None], force: Callable[[], None],
                    reload: Callable[[], None]) -> bool:
    """SIGINT/SIGTERM → ``stop(signal name)`` (second SIGINT → ``force()``), SIGHUP →
    ``reload()`` on its own thread. Returns False (nothing installed) off the main thread.

    A handler runs on the main thread between two bytecodes — possibly inside
    ``threading.Event.wait`` while that thread holds the event's lock, so setting the event from
    the handler would deadlock (it did, now and then, on SIGTERM). The handlers therefore only
    put the signal on a ``SimpleQueue`` (reentrant, made for this) and one dispatcher thread
    acts on it."""
    if threading.current_thread() is not threading.main_thread():
        return False
    inbox: queue.SimpleQueue[int] = queue.SimpleQueue()

    def dispatch() -> None:
        interrupts = 0
        while True:
            signum = inbox.get()
            if signum in (signal.SIGINT, signal.SIGTERM):
                if signum == signal.SIGINT:
                    interrupts += 1
                if interrupts > 1:
                    force()
                else:
                    stop(signal.Signals(signum).name)
            else:  # a reload may take seconds: stop signals must not wait behind it
                threading.Thread(target=reload, name="devserve-sighup", daemon=True).start()

    threading.Thread(target=dispatch, name="devserve-signals", daemon=True).start()

    def on_signal(signum: int, frame: Any) -> None:
        inbox.put(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_signal)
    return True
