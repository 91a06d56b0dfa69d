"""The live terminal dashboard: a rich ``Live`` view of the event-derived snapshot.

- Events are queued by ``emit`` (cheap, any thread) and folded into the snapshot by one render
  thread at most ``MAX_FPS`` times a second, and only when something changed.
- Log records and the app's ``print``/stderr output appear above the live view (rich's
  redirection plus a logging handler on the live console), so they never corrupt it.
- Keys (when stdin is a TTY): r reload, R restart, c clear error, l toggle request log, q quit.
- ``breakpoint()`` in the app pauses the view (terminal back in cooked mode) until the debugger
  continues. The terminal is restored on exit, on crash and on Ctrl+C.
"""

from __future__ import annotations

import logging
import os
import pdb
import sys
import threading
import time
from collections import deque
from types import FrameType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from devserve import lifecycle as ev
from devserve.config import Config
from devserve.display.model import Snapshot, clear_error, reduce, reduce_requests
from devserve.display.plain import describe
from devserve.display.render import dashboard
from devserve.server import Controls

MAX_FPS = 10
TRAFFIC_FPS = 2


class _ConsoleHandler(logging.Handler):
    """Prints log records above the live view."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            style = "red" if record.levelno >= logging.ERROR else (
                "yellow" if record.levelno >= logging.WARNING else "")
            self.console.print(Text(line, style=style), soft_wrap=True, highlight=False)
        except Exception:
            self.handleError(record)


class Dashboard:
    """A LifecycleCollector that renders; start() / close() bracket its life."""

    def __init__(self, config: Config, controls: Controls, *,
                 console: Console | None = None) -> None:
        self.config = config
        self.controls = controls
        self.console = console or Console()
        self.snapshot = Snapshot()
        self.show_requests = True
        self._queue: deque[ev.Event] = deque()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._live: Live | None = None
        self._thread: threading.Thread | None = None
        self._keys_thread: threading.Thread | None = None
        self._tty_state: Any = None
        self._handler: _ConsoleHandler | None = None
        self._saved_handlers: list[logging.Handler] = []
        self._saved_breakpointhook = sys.breakpointhook
        self._last_render = 0.0

    # -- collector -------------------------------------------------------------------------
    def emit(self, event: ev.Event) -> None:
        self._queue.append(event)
        if not isinstance(event, ev.RequestCompleted | ev.WorkerStats):
            described = describe(event)
            if described is not None and described[0] >= logging.WARNING:
                # Failures are also printed above the view so they stay in the scrollback.
                logging.getLogger("devserve.error").log(described[0], "%s", described[1])
        self._dirty.set()

    # -- life ------------------------------------------------------------------------------
    def start(self) -> None:
        self._live = Live(
            dashboard(self.snapshot, time.monotonic()),
            console=self.console, auto_refresh=False, redirect_stdout=True,
            redirect_stderr=True, transient=False,
        )
        self._live.start()
        self._route_logging()
        self._install_breakpoint_hook()
        self._thread = threading.Thread(target=self._render_loop, name="devserve-dashboard",
                                        daemon=True)
        self._thread.start()
        if sys.stdin is not None and sys.stdin.isatty():
            self._keys_thread = threading.Thread(target=self._read_keys, name="devserve-keys",
                                                 daemon=True)
            self._keys_thread.start()

    def close(self) -> None:
        self._stop.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self._restore_tty()
        self._render(force=True)
        if self._live is not None:
            self._live.stop()
        self._unroute_logging()
        sys.breakpointhook = self._saved_breakpointhook

    # -- rendering -------------------------------------------------------------------------
    def _drain(self) -> tuple[bool, bool]:
        """Fold queued events; returns (lifecycle changed, traffic changed)."""
        lifecycle = False
        requests: list[ev.RequestCompleted] = []
        snapshot = self.snapshot
        while self._queue:
            event = self._queue.popleft()
            if isinstance(event, ev.RequestCompleted):
                requests.append(event)
                continue
            if requests:
                snapshot = reduce_requests(snapshot, requests)
                requests = []
            new = reduce(snapshot, event)
            if new is not snapshot:
                snapshot = new
                lifecycle = lifecycle or not isinstance(event, ev.WorkerStats)
        traffic = bool(requests) or snapshot is not self.snapshot
        if requests:
            snapshot = reduce_requests(snapshot, requests)
        self.snapshot = snapshot
        return lifecycle, traffic

    def _render(self, force: bool = False) -> None:
        """Fold events and redraw: at once for lifecycle changes, at most TRAFFIC_FPS times a
        second for traffic alone (a frame costs milliseconds), and once a second regardless
        (uptimes, req/s)."""
        if self._live is None or self._paused.is_set():
            return
        lifecycle, traffic = self._drain()
        now = time.monotonic()
        since = now - self._last_render
        if force or lifecycle or (traffic and since >= 1.0 / TRAFFIC_FPS) or since >= 1.0:
            self._last_render = now
            self._live.update(
                dashboard(self.snapshot, now, show_requests=self.show_requests),
                refresh=True,
            )

    def _render_loop(self) -> None:
        interval = 1.0 / MAX_FPS
        while not self._stop.is_set():
            self._dirty.wait(1.0)
            self._dirty.clear()
            try:
                self._render()
            except Exception:
                logging.getLogger("devserve.error").exception("dashboard render failed")
            self._stop.wait(interval)  # at most MAX_FPS renders a second

    def print_line(self, line: str) -> None:
        """Output from a process worker, shown above the live view."""
        self.console.print(Text(line), soft_wrap=True, highlight=False)

    # -- logging ---------------------------------------------------------------------------
    def _route_logging(self) -> None:
        root = logging.getLogger("devserve")
        self._saved_handlers = list(root.handlers)
        self._handler = _ConsoleHandler(self.console)
        if self._saved_handlers:
            self._handler.setFormatter(self._saved_handlers[0].formatter)
        root.handlers = [self._handler]
        # The access log goes to the requests panel instead of scrolling the terminal.
        logging.getLogger("devserve.access").disabled = True

    def _unroute_logging(self) -> None:
        root = logging.getLogger("devserve")
        if self._handler is not None and self._handler in root.handlers:
            root.handlers = self._saved_handlers
        logging.getLogger("devserve.access").disabled = False

    # -- keys ------------------------------------------------------------------------------
    def _read_keys(self) -> None:
        try:
            import select
            import termios
            import tty
        except ImportError:  # Windows: no keys, the view still works
            return
        fd = sys.stdin.fileno()
        try:
            self._tty_state = termios.tcgetattr(fd)
            tty.setcbreak(fd)
        except termios.error:
            return
        try:
            while not self._stop.is_set():
                if self._paused.is_set():
                    self._stop.wait(0.1)
                    continue
                ready, _, _ = select.select([fd], [], [], 0.2)
                if not ready or self._paused.is_set():
                    continue
                try:
                    data = os.read(fd, 1)
                except OSError:
                    data = b""
                if not data:
                    # The terminal went away (hang-up): nobody can see or drive us; stop.
                    self.controls.shutdown()
                    return
                self.on_key(data.decode(errors="ignore"))
        finally:
            self._restore_tty()

    def on_key(self, key: str) -> None:
        """Act on one key press (public so it is testable without a terminal)."""
        if key == "r":
            threading.Thread(target=self.controls.graceful_reload, daemon=True).start()
        elif key == "R":
            threading.Thread(target=self.controls.restart_workers, daemon=True).start()
        elif key == "c":
            self._queue.append(ev.LogLine(level="info", message="errors cleared"))
            self.snapshot = clear_error(self.snapshot)
            self._render(force=True)
        elif key == "l":
            self.show_requests = not self.show_requests
            self._render(force=True)
        elif key == "q":
            self.controls.shutdown()

    def _restore_tty(self) -> None:
        if self._tty_state is None:
            return
        try:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._tty_state)
        except Exception:
            pass

    # -- debugger --------------------------------------------------------------------------
    def _install_breakpoint_hook(self) -> None:
        hook = os.environ.get("PYTHONBREAKPOINT", "")
        if hook not in ("", "pdb.set_trace"):
            return  # the user chose another debugger (or disabled it): leave it alone
        sys.breakpointhook = self._breakpoint

    def _breakpoint(self, *args: Any, **kwargs: Any) -> None:
        frame = sys._getframe(1)
        debugger = _PausingPdb(self)
        debugger.set_trace(frame)

    def pause(self) -> None:
        """Stop the live view and give the terminal back (debugger prompt)."""
        if self._paused.is_set():
            return
        self._paused.set()
        if self._live is not None:
            self._live.stop()
        self._restore_tty()

    def resume(self) -> None:
        if not self._paused.is_set():
            return
        if self._keys_thread is not None and self._tty_state is not None:
            try:
                import tty

                tty.setcbreak(sys.stdin.fileno())
            except Exception:
                pass
        self._paused.clear()
        if self._live is not None and not self._stop.is_set():
            self._live.start()
            self._render(force=True)


class _PausingPdb(pdb.Pdb):
    """pdb that pauses the dashboard while its prompt is up and resumes on continue/quit."""

    def __init__(self, dashboard: Dashboard) -> None:
        super().__init__()
        self._dashboard = dashboard

    def interaction(self, frame: FrameType | None, traceback: Any) -> None:
        self._dashboard.pause()
        super().interaction(frame, traceback)

    def set_continue(self) -> None:
        super().set_continue()
        self._dashboard.resume()

    def set_quit(self) -> None:
        super().set_quit()
        self._dashboard.resume()
