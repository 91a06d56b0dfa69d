"""Process workers: the child's entry point and the pipe protocol to the Supervisor.

Children are started with the ``spawn`` method so they import the app fresh (a forked child would
keep the parent's stale modules). Parent → child commands: ``drain``, ``shutdown``, ``force``.
Child → parent messages: ``("ready",)``, ``("failed", message, traceback)``, ``("event", ev)``.
The child ignores SIGINT (the Supervisor coordinates a terminal Ctrl+C), treats SIGTERM as
``shutdown``, and shuts down when the pipe closes (the Supervisor died).
"""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from devserve.config import Config
from devserve.errors import DevserveError
from devserve.lifecycle import Event, RequestCompleted
from devserve.reload.importer import LoadedApp


class PipeCollector:
    """Forwards events to the parent; request events only when a display asked for them."""

    def __init__(self, conn: Connection, lock: threading.Lock, forward_requests: bool) -> None:
        self._conn = conn
        self._lock = lock
        self._forward_requests = forward_requests

    def emit(self, event: Event) -> None:
        if not self._forward_requests and isinstance(event, RequestCompleted):
            return
        send(self._conn, self._lock, ("event", event))


def send(conn: Connection, lock: threading.Lock, message: tuple[Any, ...]) -> None:
    with lock:
        try:
            conn.send(message)
        except (OSError, ValueError):
            pass  # the Supervisor is gone; the pipe EOF handler shuts us down


def start_child(config: Config, generation: int, conn: Connection, lock: threading.Lock
                ) -> LoadedApp:
    """What every spawned worker does first: leave Ctrl+C and SIGHUP to the Supervisor, set
    up logging, import the app fresh (from source after a reload), and report a failed import
    (message, traceback, file:line) before exiting with its code."""
    from devserve.logs import configure_logging
    from devserve.reload.importer import load_app, load_app_fresh

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads are the Supervisor's call
    configure_logging(config)
    try:
        if generation > 1:
            dirs = [Path(d) for d in (*config.reload_dirs, config.app_dir)]
            return load_app_fresh(config.app, dirs=dirs, app_dir=config.app_dir,
                                  factory=config.factory, interface=config.interface)
        return load_app(config.app, app_dir=config.app_dir, factory=config.factory,
                        interface=config.interface)
    except DevserveError as exc:
        send(conn, lock, ("failed", exc.one_line(), getattr(exc, "traceback_text", None),
                          getattr(exc, "location", None)))
        raise SystemExit(exc.exit_code) from None


def process_main(
    config: Config,
    sock: socket.socket,
    slot: int,
    generation: int,
    conn: Connection,
    forward_events: bool,
    forward_requests: bool,
    output: socket.socket | None = None,
) -> None:
    """Entry point of a spawned worker process."""
    if output is not None:
        # A live display owns the terminal: our stdout/stderr go to the Supervisor instead.
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
        output.close()
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, io.TextIOWrapper):
                stream.reconfigure(line_buffering=True)
    from devserve.asgi.lifespan import LifespanFailed
    from devserve.reload.importer import user_traceback
    from devserve.workers.sync_worker import SyncWorker
    from devserve.workers.worker import Worker

    lock = threading.Lock()
    loaded = start_child(config, generation, conn, lock)
    if output is not None:
        logging.getLogger("devserve.access").disabled = True  # the display's request panel
    collector = PipeCollector(conn, lock, forward_requests) if forward_events else None
    app = loaded.app
    hub = None
    if config.livereload:
        from devserve.reload.livereload import LiveReloadHub, LiveReloadMiddleware

        hub = LiveReloadHub()
        app = LiveReloadMiddleware(app, hub, generation)
    worker: Worker | SyncWorker
    if loaded.interface == "wsgi" or config.execution == "sync":
        # Blocking threads with this process's own AcceptDistributor (see sync_worker.py).
        worker = SyncWorker.standalone(
            config, loaded.app if loaded.interface == "wsgi" else app, sock,
            interface="wsgi" if loaded.interface == "wsgi" else "asgi", slot=slot,
            generation=generation, collector=collector)
    else:
        worker = Worker(config, app, sock, slot=slot, generation=generation,
                        collector=collector)

    def on_sigterm(signum: int, frame: Any) -> None:
        worker.shutdown()

    signal.signal(signal.SIGTERM, on_sigterm)

    def report_ready() -> None:
        worker.ready.wait()
        if worker.startup_error is None:
            send(conn, lock, ("ready",))
        # A startup failure is reported by the main thread before it exits (no race).

    def read_commands() -> None:
        while True:
            try:
                command = conn.recv()
            except (EOFError, OSError):
                worker.shutdown()
                return
            if command == "drain":
                if hub is not None:
                    hub.close_generations_before(generation + 1)  # browser channel first
                worker.start_draining()
            elif isinstance(command, tuple) and command[0] == "livereload-error":
                if hub is not None:
                    hub.report_error(command[1])
            elif command == "shutdown":
                if hub is not None:
                    hub.close_generations_before(generation + 1)  # browser channel first
                worker.shutdown()
            elif command == "force":
                worker.force_stop()
            elif isinstance(command, tuple) and command[0] == "grace":
                worker.grace = float(command[1])

    threading.Thread(target=report_ready, name="devserve-ready", daemon=True).start()
    threading.Thread(target=read_commands, name="devserve-control", daemon=True).start()
    try:
        worker.run()
    except Exception:
        logging.getLogger("devserve.error").exception("worker %d crashed", slot)
        raise SystemExit(1) from None
    if worker.startup_error is not None:
        err = worker.startup_error
        tb = None if isinstance(err, LifespanFailed) else user_traceback(err)
        send(conn, lock, ("failed", f"lifespan startup failed: {err}", tb))
        raise SystemExit(4)
    if not worker.retired and not worker.state.shutting_down and not worker.state.draining:
        raise SystemExit(1)  # the loop stopped without being asked: report it as a crash
