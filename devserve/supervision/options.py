"""What the composition root gives the Supervisor at construction (never assigned later)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devserve.asgi.types import ASGIApp
from devserve.lifecycle import LifecycleCollector

SyncApp = Callable[..., Any]
AppLoader = Callable[[], ASGIApp]
AppWrapper = Callable[[ASGIApp, int], ASGIApp]
OutputSink = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class SupervisorOptions:
    """Wiring of one Supervisor.

    - ``app_loader``: thread mode, a freshly imported app for a reload (None keeps the app).
    - ``app_wrapper``: applied to every generation's app with its number (thread mode; process
      children apply their own), e.g. the livereload middleware.
    - ``reload_grace``: how long a retiring generation may drain.
    - ``output_sink``: process mode, where the children's stdout/stderr lines go (a live display
      owns the terminal); None lets children write to the terminal directly.
    - ``worker_collector``: where workers send per-request events and gauges; None (the
      default) spares them the cost when no display consumes them.
    """

    reload_grace: float
    app_loader: AppLoader | None = None
    app_wrapper: AppWrapper | None = None
    output_sink: OutputSink | None = None
    worker_collector: LifecycleCollector | None = None
