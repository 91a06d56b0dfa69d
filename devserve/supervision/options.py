"""What the composition root gives the Supervisor at construction (never assigned later)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from devserve.asgi.types import ASGIApp
from devserve.lifecycle import LifecycleCollector
from devserve.reload.importer import FreshProcessNeeded, ReloadOutcome
from devserve.supervision.ipc import Failed

SyncApp = Callable[..., Any]
# Re-imports the app after the changed files (None: all of them); raises DevserveError (the
# user's error, or FreshProcessNeeded when the edit cannot be taken in this process).
AppLoader = Callable[[Collection[Path] | None], ReloadOutcome]
AppWrapper = Callable[[ASGIApp, int], ASGIApp]
OutputSink = Callable[[str], None]


class FreshStart(Protocol):
    """Thread mode: serving an edit the running process cannot take (see :mod:`.escalate`)."""

    def prepare(self, need: FreshProcessNeeded, generation: int) -> Failed | None:
        """Import the app and the project modules loaded here (``need.modules``) in a fresh
        process that would serve *generation*: what failed, or None when it can serve them."""

    def start(self, reason: str) -> None:
        """Serve from that process: this one stops (without the shutdown delay) and the
        composition root hands over once ``run()`` returns."""


@dataclass(frozen=True, slots=True)
class HandOver:
    """This server took over from one that could not take an edit in place: it starts at
    *generation* and reports that reload (begun at *started*, ``time.monotonic()``, which is
    system-wide on Linux) once it serves."""

    generation: int
    started: float
    reason: str


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
    - ``fresh_start``: thread mode, how an edit only a fresh process can take is served
      (``supervision.relaunch``). None: such an edit is reported as a failed reload.
    - ``handed_over``: this server serves an edit its predecessor handed over.
    """

    reload_grace: float
    app_loader: AppLoader | None = None
    app_wrapper: AppWrapper | None = None
    output_sink: OutputSink | None = None
    worker_collector: LifecycleCollector | None = None
    fresh_start: FreshStart | None = None
    handed_over: HandOver | None = None
