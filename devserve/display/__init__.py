"""Views of the lifecycle events: the rich dashboard, plain log lines, or JSON lines.

Displays only read events (they are collectors on the server's fan-out) and ask for actions
through the Supervisor's public methods (:class:`~devserve.server.Controls`). Nothing below this
package knows it exists: the CLI passes :func:`make_display` to :func:`devserve.server.serve`.
May import: server (for the protocols it implements), lifecycle, config, and the packages below.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from devserve.config import Config
from devserve.display.dashboard import Dashboard
from devserve.display.plain import JsonLog, PlainLog
from devserve.lifecycle import FanOutCollector
from devserve.server import Controls, Display

__all__ = ["Controls", "Display", "make_display", "tui_wanted"]


def tui_wanted(config: Config) -> bool:
    """``--tui auto``: on when stdout is an interactive terminal and TERM is not ``dumb``."""
    if config.tui != "auto":
        return config.tui == "on"
    return sys.stdout.isatty() and os.environ.get("TERM", "dumb") != "dumb"


class _LogView:
    """Plain log lines or JSON lines: a sink on the collector, nothing to start or close."""

    output_sink: Callable[[str], None] | None = None

    def __init__(self, wants_requests: bool) -> None:
        self.wants_requests = wants_requests

    def start(self, controls: Controls) -> None:
        pass

    def close(self) -> None:
        pass


class _LiveView:
    """The dashboard: it needs the Supervisor's controls, so it is created on ``start``;
    process workers' output goes above the live view."""

    wants_requests = True

    def __init__(self, config: Config, collector: FanOutCollector) -> None:
        self._config = config
        self._collector = collector
        self._dashboard: Dashboard | None = None
        self.output_sink: Callable[[str], None] | None = self._print_line

    def _print_line(self, line: str) -> None:
        if self._dashboard is not None:
            self._dashboard.print_line(line)
        else:
            print(line, flush=True)

    def start(self, controls: Controls) -> None:
        dashboard = Dashboard(self._config, controls)
        self._collector.add(dashboard)
        dashboard.start()
        self._dashboard = dashboard

    def close(self) -> None:
        if self._dashboard is not None:
            self._dashboard.close()


def make_display(config: Config, collector: FanOutCollector) -> Display:
    """The view *config* asks for (``--log-format json``, ``--tui``, else plain lines), with
    its sinks attached to *collector* (a :data:`~devserve.server.DisplayFactory`)."""
    if config.log_format == "json":
        collector.add(JsonLog(sys.stdout))
        return _LogView(wants_requests=True)
    if tui_wanted(config):
        return _LiveView(config, collector)
    collector.add(PlainLog())
    return _LogView(wants_requests=False)
