"""What the composition root gives the Supervisor at construction (never assigned later)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devserve.asgi.types import ASGIApp
from devserve.lifecycle import LifecycleCollector
from devserve.reload.importer import ReloadOutcome

SyncApp = Callable[..., Any]
# Re-imports the app after the changed files (None: all of them); raises DevserveError (the
# user's error, or FreshProcessNeeded when the edit cannot be taken in this process).
AppLoader = Callable[[Collection[Path] | None], ReloadOutcome]
AppWrapper = Callable[[ASGIApp, int], ASGIApp]
OutputSink = Callable[[str], None]
FreshStart = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class SupervisorOptions:
    """Wiring of one Supervisor.

    - ``app_loader``: thread mode, re-imports what the changed files affect and returns the
      app with how it got there (None keeps the app).
    - ``app_wrapper``: applied to every generation's app with its number (thread mode; process
      children apply their own), e.g. the livereload middleware.
    - ``reload_grace``: how long a retiring generation may drain.
    - ``output_sink``: process mode, where the children's stdout/stderr lines go (a live display
      owns the terminal); None lets children write to the terminal directly.
    - ``worker_collector``: where workers send per-request events and gauges; None (the
      default) spares them the cost when no display consumes them.
    - ``fresh_start``: thread mode, an edit only a fresh process can take was checked in one;
      the composition root re-execs devserve (listening sockets kept) once ``run()`` returns.
      None: such an edit is reported as a failed reload.
    """

    reload_grace: float
    app_loader: AppLoader | None = None
    app_wrapper: AppWrapper | None = None
    output_sink: OutputSink | None = None
    worker_collector: LifecycleCollector | None = None
    fresh_start: FreshStart | None = None
