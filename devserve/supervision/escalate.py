"""Escalation to a fresh process, for an edit the running process cannot take in place.

Thread mode re-imports in-process; some edits cannot be trusted that way (Django models,
settings, app configurations, migrations; a declaration a library refuses to see twice). Then:

1. **Prepare** the new code in a fresh process first: it imports the app and every project
   module the running process had loaded (lazily imported views included). If that fails, the
   error (file:line) is reported like any failed reload and the running generation keeps
   serving: a broken edit never takes the server down.
2. **Hand over**: the running generation drains and the fresh process serves the listening
   sockets; connections arriving meanwhile wait in the kernel backlog, never refused. How (a
   prepared standby, or a check then ``exec``) is :mod:`.relaunch`'s business.
"""

from __future__ import annotations

from collections.abc import Callable

from devserve.lifecycle import Event, LogLine, ReloadStarted
from devserve.reload.importer import FreshProcessNeeded
from devserve.supervision.handles import StartError
from devserve.supervision.options import FreshStart


class Escalation:
    """What :class:`~.generations.Generations` calls with a :class:`FreshProcessNeeded`."""

    def __init__(self, fresh_start: FreshStart, emit: Callable[[Event], None],
                 report_failed: Callable[[int, str, StartError], None]) -> None:
        self._fresh_start = fresh_start
        self._emit = emit
        self._report_failed = report_failed

    def __call__(self, generation: int, need: FreshProcessNeeded) -> None:
        self._emit(ReloadStarted(generation=generation, strategy="process"))
        failed = self._fresh_start.prepare(need, generation)
        if failed is not None:
            self._report_failed(generation, "process", StartError(
                failed.message, failed.traceback, failed.location))
            return
        self._emit(LogLine(level="info",
                           message=f"Restarting in a fresh process: {need.message}"))
        self._fresh_start.start(need.message)
