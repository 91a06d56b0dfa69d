"""Escalation to a fresh process, for an edit the running process cannot take in place.

Thread mode re-imports in-process; some edits cannot be trusted that way (Django models,
settings, app configurations, migrations; a declaration a library refuses to see twice). Then:

1. **Check** the new code in a fresh interpreter first: a spawned process imports the app and
   every project module the running process had loaded (lazily imported views included). If it
   fails, the error (file:line) is reported like any failed reload and the running generation
   keeps serving: a broken edit never takes the server down.
2. **Hand over**: the composition root (``server``) keeps the listening sockets open across an
   ``exec`` of a fresh devserve, so connections arriving meanwhile wait in the kernel backlog
   (never refused); the running generation drains first.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from devserve.config import Config
from devserve.lifecycle import Event, LogLine, ReloadStarted
from devserve.reload.importer import FreshProcessNeeded
from devserve.supervision.child import check_main
from devserve.supervision.handles import StartError
from devserve.supervision.ipc import Failed, Ready
from devserve.supervision.options import FreshStart

CHECK_TIMEOUT = 60.0


def check_in_fresh_process(config: Config, modules: tuple[str, ...], timeout: float
                           ) -> StartError | None:
    """Import the app and *modules* in a spawned interpreter: None when they import cleanly."""
    mp = multiprocessing.get_context("spawn")
    parent, child = mp.Pipe()
    process = mp.Process(target=check_main, args=(config, modules, child),
                         name="devserve-check", daemon=True)
    process.start()
    child.close()
    try:
        return _outcome(parent, timeout)
    finally:
        parent.close()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()


def _outcome(conn: Connection, timeout: float) -> StartError | None:
    deadline = time.monotonic() + timeout
    while conn.poll(max(0.0, deadline - time.monotonic())):
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if isinstance(message, Ready):
            return None
        if isinstance(message, Failed):
            return StartError(message.message, message.traceback, message.location)
    return StartError("the fresh process did not finish importing the app")


class Escalation:
    """What :class:`~.generations.Generations` calls with a :class:`FreshProcessNeeded`."""

    def __init__(self, config: Config, fresh_start: FreshStart, emit: Callable[[Event], None],
                 report_failed: Callable[[int, str, StartError], None]) -> None:
        self._config = config
        self._fresh_start = fresh_start
        self._emit = emit
        self._report_failed = report_failed

    def __call__(self, generation: int, need: FreshProcessNeeded) -> None:
        self._emit(ReloadStarted(generation=generation, strategy="process"))
        error = check_in_fresh_process(self._config, need.modules, CHECK_TIMEOUT)
        if error is not None:
            self._report_failed(generation, "process", error)
            return
        self._emit(LogLine(level="info",
                           message=f"Restarting in a fresh process: {need.message}"))
        self._fresh_start(need.message)
