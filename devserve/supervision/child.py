"""Process workers: what a spawned child runs, talking to the Supervisor through :mod:`.ipc`.

Children are spawned, or forked from a process template that has loaded libraries but never
project code (see :mod:`.template`), so they import the app fresh (a child forked from the
Supervisor would keep its stale modules). A child leaves Ctrl+C and SIGHUP to the Supervisor,
treats SIGTERM as a shutdown, reports :class:`~.ipc.Ready` or :class:`~.ipc.Failed` (then the
libraries it loaded, for the next template), obeys commands through the one
:func:`~.ipc.dispatch_commands` loop, and shuts down when the pipe ends (the Supervisor died).
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
from typing import Any, Protocol

from devserve.asgi.lifespan import LifespanFailed
from devserve.config import Config
from devserve.errors import DevserveError
from devserve.lifecycle import Event, RequestCompleted
from devserve.logs import configure_logging
from devserve.reload.frameworks import drop_template_caches
from devserve.reload.importer import LoadedApp, load_app, user_traceback
from devserve.reload.livereload import LiveReloadHub, LiveReloadMiddleware
from devserve.reload.recorder import ProjectFiles
from devserve.serve.h3 import AppRef
from devserve.supervision.check import load_project_fresh, project_dirs
from devserve.supervision.ipc import (
    AcceptStopped,
    Channel,
    Failed,
    Forward,
    LibraryModules,
    LivereloadError,
    Modules,
    Ready,
    Refresh,
    dispatch_commands,
)
from devserve.supervision.prewarm import library_modules
from devserve.workers.base import TCPWorker
from devserve.workers.h3_worker import H3Worker
from devserve.workers.sync_worker import SyncWorker
from devserve.workers.worker import Worker

EXIT_CRASHED = 1
EXIT_STARTUP = 4


class PipeCollector:
    """Forwards events to the Supervisor; request events only when a display asked for them."""

    def __init__(self, channel: Channel, forward_requests: bool) -> None:
        self._channel = channel
        self._forward_requests = forward_requests

    def emit(self, event: Event) -> None:
        if self._forward_requests or not isinstance(event, RequestCompleted):
            self._channel.send(Forward(event))


class _Stoppable(Protocol):
    """The part of a worker (TCP or HTTP/3) the command loop drives."""

    grace: float
    ready: threading.Event
    startup_error: BaseException | None

    def start_draining(self) -> None: ...

    def mark_unhealthy(self) -> None: ...

    def stop_accepting(self, backlog: bool = False) -> threading.Event: ...

    def shutdown(self) -> None: ...

    def force_stop(self) -> None: ...


class _Control:
    """The child's answers to the Supervisor's commands (see :class:`~.ipc.ChildControl`)."""

    channel: Channel | None = None  # where AcceptStopped and Modules go (set by _serve)
    project: ProjectFiles | None = None  # which loaded modules are the project's

    def __init__(self, worker: _Stoppable, hub: LiveReloadHub | None, generation: int,
                 app: object) -> None:
        self.worker = worker
        self.hub = hub
        self.generation = generation
        self.app = app  # the app as loaded (before livereload wrapping): its template engines

    def _close_browser_channel(self) -> None:
        if self.hub is not None:  # the livereload stream first: it would hold the drain open
            self.hub.close_generations_before(self.generation + 1)

    def drain(self, grace: float) -> None:
        self.worker.grace = grace
        self._close_browser_channel()
        channel = self.channel
        if isinstance(self.worker, Worker) and channel is not None and hasattr(
                socket, "send_fds"):  # Unix
            # Idle keep-alive connections go to the new generation (via the Supervisor)
            # instead of being closed under a client about to reuse them.
            def hand_off(sock: socket.socket) -> None:
                channel.send_socket(sock)
                sock.close()

            self.worker.handoff = hand_off
        self.worker.start_draining()

    def adopt(self, sock: socket.socket) -> None:
        """A connection handed over by a draining child of the previous generation."""
        if isinstance(self.worker, Worker):
            self.worker.adopt(sock)
        else:
            sock.close()

    def mark_unhealthy(self) -> None:
        self.worker.mark_unhealthy()

    def stop_accepting(self, backlog: bool) -> None:
        """Close the listener (on the worker's loop); acknowledge once it is closed, from a
        thread of its own so the command loop stays free (a Force may follow)."""
        done = self.worker.stop_accepting(backlog)
        channel = self.channel

        def acknowledge() -> None:
            done.wait()
            if channel is not None:
                channel.send(AcceptStopped())

        threading.Thread(target=acknowledge, name="devserve-accept-stopped",
                         daemon=True).start()

    def shutdown(self, grace: float) -> None:
        self.worker.grace = grace
        self._close_browser_channel()
        self.worker.shutdown()

    def force(self) -> None:
        self.worker.force_stop()

    def livereload_error(self, error: LivereloadError) -> None:
        if self.hub is not None:
            self.hub.report_error({"error": error.error, "location": error.location,
                                   "traceback": error.traceback})

    def refresh(self, refresh: Refresh) -> None:
        if refresh.templates:
            drop_template_caches(self.app)
        if self.hub is not None:
            self.hub.refresh(refresh.kind, list(refresh.paths))

    def list_modules(self) -> None:
        names = tuple(self.project.loaded_modules()) if self.project is not None else ()
        if self.channel is not None:
            self.channel.send(Modules(names))  # first: the next generation waits for it
            self.channel.send(LibraryModules(library_modules()))  # request-time imports too

    def parent_gone(self) -> None:
        self.worker.shutdown()


def start_child(config: Config, generation: int, channel: Channel,
                preload: tuple[str, ...] = ()) -> LoadedApp:
    """What every spawned worker does first: leave Ctrl+C and SIGHUP to the Supervisor, set
    up logging, import the app fresh (from source after a reload) and the project modules the
    previous generation had loaded (*preload*: lazily imported ones too, so their errors show
    before this generation is promoted), and report a failed import (message, traceback,
    file:line) before exiting with its code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads are the Supervisor's call
    configure_logging(config)
    try:
        if generation > 1:
            return load_project_fresh(config, preload)
        return load_app(config.app, app_dir=config.app_dir, factory=config.factory,
                        interface=config.interface)
    except DevserveError as exc:
        channel.send(Failed(exc.one_line(), getattr(exc, "traceback_text", None),
                            getattr(exc, "location", None)))
        raise SystemExit(exc.exit_code) from None


def _serve(worker: _Stoppable, run: Any, channel: Channel, conn: Connection,
           hub: LiveReloadHub | None, generation: int, app: object = None,
           project: ProjectFiles | None = None) -> None:
    """Announce readiness, obey commands, run *worker* in this thread; a failed lifespan
    startup is reported (after ``run`` returned, so nothing races it) and exits with 4."""
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.shutdown())

    def report_ready() -> None:
        worker.ready.wait()
        if worker.startup_error is None:
            channel.send(Ready())
            channel.send(LibraryModules(library_modules()))

    threading.Thread(target=report_ready, name="devserve-ready", daemon=True).start()
    control = _Control(worker, hub, generation, app)
    control.channel = channel
    control.project = project
    threading.Thread(target=dispatch_commands, args=(conn, control),
                     name="devserve-control", daemon=True).start()
    run()
    err = worker.startup_error
    if err is not None:
        tb = None if isinstance(err, LifespanFailed) else user_traceback(err)
        channel.send(Failed(f"lifespan startup failed: {err}", tb))
        raise SystemExit(EXIT_STARTUP)


def _redirect_output(output: socket.socket) -> None:
    """A live display owns the terminal: stdout/stderr go to the Supervisor instead."""
    os.dup2(output.fileno(), 1)
    os.dup2(output.fileno(), 2)
    output.close()
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)


def process_main(
    config: Config,
    sock: socket.socket,
    slot: int,
    generation: int,
    conn: Connection,
    forward_events: bool,
    forward_requests: bool,
    output: socket.socket | None = None,
    preload: tuple[str, ...] = (),
) -> None:
    """Entry point of a spawned TCP worker process."""
    if output is not None:
        _redirect_output(output)
    channel = Channel(conn)
    loaded = start_child(config, generation, channel, preload)
    if output is not None:
        logging.getLogger("devserve.access").disabled = True  # the display's request panel
    collector = PipeCollector(channel, forward_requests) if forward_events else None
    app = loaded.app
    hub = None
    if config.livereload:
        hub = LiveReloadHub()
        app = LiveReloadMiddleware(app, hub, generation)
    worker: TCPWorker
    if loaded.interface == "wsgi" or config.execution == "sync":
        # Blocking threads with this process's own AcceptDistributor (see sync_worker.py).
        worker = SyncWorker.standalone(
            config, loaded.app if loaded.interface == "wsgi" else app, sock,
            interface="wsgi" if loaded.interface == "wsgi" else "asgi", slot=slot,
            generation=generation, collector=collector)
    else:
        worker = Worker(config, app, sock, slot=slot, generation=generation,
                        collector=collector)

    def run() -> None:
        try:
            worker.run()
        except Exception:
            logging.getLogger("devserve.error").exception("worker %d crashed", slot)
            raise SystemExit(EXIT_CRASHED) from None

    _serve(worker, run, channel, conn, hub, generation, loaded.app,
           ProjectFiles(project_dirs(config)))
    if not worker.retired and not worker.state.shutting_down and not worker.state.draining:
        raise SystemExit(EXIT_CRASHED)  # the loop stopped without being asked: a crash


def h3_process_main(config: Config, sock: socket.socket, slot: int, generation: int,
                    conn: Connection) -> None:
    """Entry point of a spawned HTTP/3 worker process: it imports the app fresh and runs its
    lifespan itself (the app lives in this child, so a reload replaces the child)."""
    channel = Channel(conn)
    loaded = start_child(config, generation, channel)
    worker = H3Worker(config, AppRef(loaded.app, generation), sock, slot=slot,
                      run_lifespan=True)
    _serve(worker, worker.run, channel, conn, None, generation)
