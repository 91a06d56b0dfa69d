"""Escalation to a fresh process, for an edit the running process cannot take in place.

Thread mode re-imports in-process; some edits cannot be trusted that way (Django models,
settings, app configurations, migrations; a declaration a library refuses to see twice). Then:

1. **Check** the new code in a fresh interpreter first (:mod:`.check`): it imports the app and
   every project module the running process had loaded (lazily imported views included). If it
   fails, the error (file:line) is reported like any failed reload and the running generation
   keeps serving: a broken edit never takes the server down.
2. **Hand over**: the composition root (``server``) keeps the listening sockets open across an
   ``exec`` of a fresh devserve, so connections arriving meanwhile wait in the kernel backlog
   (never refused); the running generation drains first.
"""

from __future__ import annotations

from collections.abc import Callable

from devserve.config import Config
from devserve.lifecycle import Event, LogLine, ReloadStarted
from devserve.reload.importer import FreshProcessNeeded
from devserve.supervision.check import check_in_fresh_process
from devserve.supervision.handles import StartError
from devserve.supervision.options import FreshStart

CHECK_TIMEOUT = 60.0


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
        failed = check_in_fresh_process(self._config, need.modules, CHECK_TIMEOUT)
        if failed is not None:
            self._report_failed(generation, "process", StartError(
                failed.message, failed.traceback, failed.location))
            return
        self._emit(LogLine(level="info",
                           message=f"Restarting in a fresh process: {need.message}"))
        self._fresh_start(need.message)
