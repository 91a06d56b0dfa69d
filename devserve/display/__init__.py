"""Views of the lifecycle events: the rich dashboard, plain log lines, or JSON lines.

Displays only read events; actions go back through the Supervisor's public methods.
"""

from __future__ import annotations

import os
import sys
from typing import Protocol

from devserve.config import Config
from devserve.display.plain import JsonLog, PlainLog
from devserve.lifecycle import FanOutCollector


class Controls(Protocol):
    """What a display may ask of the server (keys in the dashboard)."""

    def graceful_reload(self) -> None: ...

    def restart_workers(self) -> None: ...

    def shutdown(self) -> None: ...


class Display(Protocol):
    def close(self) -> None: ...


def tui_wanted(config: Config) -> bool:
    """``--tui auto``: on when stdout is an interactive terminal and TERM is not ``dumb``."""
    if config.tui != "auto":
        return config.tui == "on"
    return sys.stdout.isatty() and os.environ.get("TERM", "dumb") != "dumb"


def attach_display(config: Config, collector: FanOutCollector, controls: Controls
                   ) -> Display | None:
    """Attach the right sink to *collector*; returns the display to close at exit."""
    supervisor_like = controls
    if config.log_format == "json":
        collector.add(JsonLog(sys.stdout))
        _want_requests(supervisor_like, collector)
        return None
    if tui_wanted(config):
        from devserve.display.dashboard import Dashboard

        dashboard = Dashboard(config, controls)
        collector.add(dashboard)
        if hasattr(controls, "output_sink"):
            controls.output_sink = dashboard.print_line
        _want_requests(supervisor_like, collector)
        dashboard.start()
        return dashboard
    collector.add(PlainLog())
    return None


def _want_requests(controls: object, collector: FanOutCollector) -> None:
    """Per-request events are only produced when a display consumes them."""
    if hasattr(controls, "worker_collector"):
        controls.worker_collector = collector
