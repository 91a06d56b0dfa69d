"""The Supervisor: owns the listening sockets and runs workers in numbered generations.

The facade of the product spec (``spec/supervisor-api.txt``); the work is done in
:mod:`devserve.supervision`:

- Workers are threads (each gets a ``dup()`` of the listener) or spawned processes (they inherit
  it), started by a launcher (``launch``). The listener is closed only at final shutdown, so
  connections arriving while workers change wait in the kernel backlog.
- ``graceful_reload()`` starts generation N+1, waits for readiness, promotes it, then drains N
  within a bounded grace; if N+1 fails it is discarded and N keeps serving (``generations``).
- ``_lifecycle_lock`` serialises reloads, restarts and crash respawns; a reload or restart asked
  for while one runs is coalesced into one follow-up, never lost, never parallel (``coalesce``).
- A crash is charged to the worker *slot*, which survives respawns; every worker has a named
  state (``rollout``, ``slots``).
- Shutdown and reload are different signals: stopping a generation never stops the Supervisor.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from devserve.asgi.types import ASGIApp
from devserve.config import Config
from devserve.errors import AppImportError, LifespanStartupError
from devserve.lifecycle import Event, LifecycleCollector, LogLine
from devserve.supervision.coalesce import Coalescer, PendingChanges
from devserve.supervision.escalate import Escalation
from devserve.supervision.generations import Generations
from devserve.supervision.h3 import H3Workers
from devserve.supervision.handles import (
    StartError,
    _H3WorkerHandle,
    _parallel_join_targets,
    _target_id,
    _WorkerHandle,
)
from devserve.supervision.launch import (
    Launcher,
    ProcessLauncher,
    ThreadLauncher,
    WorkerMode,
    choose_mode,
    gil_enabled,
)
from devserve.supervision.options import (
    AppLoader,
    AppWrapper,
    FreshStart,
    HandOver,
    OutputSink,
    SupervisorOptions,
    SyncApp,
)
from devserve.supervision.signals import StopRequest, install_signals
from devserve.supervision.slots import SlotGroup
from devserve.workers.base import TCPWorker

__all__ = ["AppLoader", "AppWrapper", "OutputSink", "StartError", "Supervisor",
           "SupervisorOptions", "WorkerMode", "_H3WorkerHandle", "_WorkerHandle",
           "_parallel_join_targets", "_target_id", "choose_mode", "gil_enabled"]

logger = logging.getLogger("devserve.error")

WATCH_INTERVAL = 0.1


class Supervisor:
    """Spawn and supervise ``config.workers`` workers as threads or processes. Everything it
    needs is given at construction, never assigned later (see ``SupervisorOptions``)."""

    def __init__(
        self,
        config: Config,
        app: ASGIApp | None,
        *,
        mode: WorkerMode | None = None,
        ssl_context: ssl.SSLContext | None = None,
        lifecycle_collector: LifecycleCollector | None = None,
        app_path: str | None = None,
        sync_app: SyncApp | None = None,
        app_loader: AppLoader | None = None,
        app_wrapper: AppWrapper | None = None,
        reload_grace: float | None = None,
        output_sink: OutputSink | None = None,
        worker_collector: LifecycleCollector | None = None,
        fresh_start: FreshStart | None = None,
        handed_over: HandOver | None = None,
    ) -> None:
        self._config = config
        self._collector = lifecycle_collector
        mode, reason = (choose_mode(config, app_is_object=app_path is None, reload=config.reload)
                        if mode is None else (mode, "chosen by the caller"))
        self._mode: WorkerMode = mode
        self.mode_reason = reason
        self.exit_code = 0
        self._options = SupervisorOptions(
            reload_grace=config.reload_grace if reload_grace is None else reload_grace,
            app_loader=app_loader, app_wrapper=app_wrapper, output_sink=output_sink,
            worker_collector=worker_collector, fresh_start=fresh_start, handed_over=handed_over)
        self._sockets: list[socket.socket] = []
        self._udp_sockets: list[socket.socket] = []
        self._lifecycle_lock = threading.Lock()
        self._stop = StopRequest(self._emit)

        def stopping() -> bool:
            return self._stop.requested

        self._coalescer = Coalescer(self._lifecycle_lock, stopping)
        self._changes = PendingChanges()
        # SyncWorkers serve WSGI apps (sync_app) and ASGI apps under --execution sync.
        sync_interface = ("wsgi" if sync_app is not None
                          else "asgi" if config.execution == "sync" else None)
        self._launcher: Launcher = (
            ThreadLauncher(config, self._options, ssl_context=ssl_context,
                           sync_interface=sync_interface)
            if mode == "thread" else ProcessLauncher(config, self._options))
        self._tcp = SlotGroup[_WorkerHandle](
            lock=self._lifecycle_lock, emit=self._emit,
            respawn=lambda slot: self._generations.respawn(slot), stopping=stopping,
            on_all_failed=self._on_all_failed)
        self._h3 = H3Workers(
            config, self._launcher,
            SlotGroup[_H3WorkerHandle](lock=self._lifecycle_lock, emit=self._emit,
                                       respawn=self._spawn_h3_worker, stopping=stopping,
                                       row_offset=config.workers),
            emit=self._emit, stopping=stopping, reload_grace=self._options.reload_grace)
        self._generations = Generations(
            config, app if app is not None else sync_app, launcher=self._launcher,
            slots=self._tcp, h3=self._h3, options=self._options, stop=self._stop,
            emit=self._emit, on_fatal=self._on_fatal, fresh_process=None if fresh_start is None
            else Escalation(fresh_start, self._emit,
                            lambda *failed: self._generations.report_failed(*failed)))

    # -- public API ------------------------------------------------------------------------
    @property
    def mode(self) -> WorkerMode:
        return self._mode

    @property
    def worker_count(self) -> int:
        return self._config.workers

    @property
    def generation(self) -> int:
        return self._generations.number

    @property
    def reload_grace(self) -> float:
        return self._options.reload_grace

    @property
    def last_crash(self) -> str | None:
        return self._tcp.last_crash

    def live_handles(self) -> list[_WorkerHandle]:
        """Handles of the current generation that are alive (for tests and displays)."""
        return [h for h in self._tcp.handles().values() if h.is_alive()]

    def set_lifespan_state(self, state: dict[str, Any]) -> None:
        self._generations.lifespan_state = state
        for handle in self._tcp.handles().values():
            if handle.worker is not None:
                handle.worker.set_lifespan_state(state)

    def run(self, sockets: list[socket.socket], udp_sockets: list[socket.socket] | None = None
            ) -> int:
        """Start generation 1, supervise until shutdown, drain; returns the exit code."""
        self._sockets = sockets
        self._udp_sockets = udp_sockets or []
        self._install_signals()
        self._launcher.open(self._sockets, self._udp_sockets)
        with self._lifecycle_lock:
            error = self._generations.start_first()
            if error is not None:
                if error.traceback:
                    logger.error("%s", error.traceback.rstrip())
                raise (LifespanStartupError(error.message) if "lifespan" in error.message
                       else AppImportError(error.message))
            for index in range(len(self._udp_sockets)):
                self._spawn_h3_worker(index)
        try:
            self._watch()
        finally:
            self._drain()
        return self.exit_code

    def shutdown(self, *, delay: bool = True, reason: str | None = None) -> None:
        """Ask to stop (non-blocking; *delay*: honour ``--shutdown-delay``); ``run()`` drains."""
        if reason is not None:
            self._stop.announce(reason)
        self._stop.request(skip_delay=not delay)

    def force_exit(self) -> None:
        """Second Ctrl+C: stop waiting for anything."""
        self._stop.force()

    def restart_workers(self) -> None:
        """Stop-then-start fallback for a reload (brief gap, queued connections wait)."""
        self._coalescer.run(self._restart_workers_impl)

    def graceful_reload(self, changed: Collection[Path] | None = None) -> None:
        """Serve the edit in *changed* (None: everything) with zero downtime: start N+1, wait
        ready, promote, drain N — or less when that is enough (templates, stylesheets)."""
        self._changes.add(changed)
        self._coalescer.run(self._graceful_reload_impl)

    # -- the spec's internals, delegating --------------------------------------------------
    def _emit(self, event: Event) -> None:
        if self._collector is not None:
            self._collector.emit(event)

    def _graceful_reload_impl(self) -> None:
        self._generations.reload(self._changes.take())

    def _restart_workers_impl(self) -> None:
        self._generations.restart()

    def _setup_sync_infrastructure(self) -> None:
        """Thread mode: the AsyncPool and AcceptDistributor all SyncWorkers share."""
        assert isinstance(self._launcher, ThreadLauncher), "process children build their own"
        self._launcher.setup_sync_infrastructure()

    def _create_worker(self, worker_id: int, socket_index: int, *, generation: int = 0,
                       app: ASGIApp | None = None, run_lifespan: bool = True) -> TCPWorker:
        """Thread mode: a Worker or SyncWorker for slot *worker_id* (not started)."""
        assert isinstance(self._launcher, ThreadLauncher), "process children build their own"
        the_app = app if app is not None else self._generations.app
        assert the_app is not None
        return self._launcher.create_worker(worker_id, socket_index, generation=generation,
                                            app=the_app, run_lifespan=run_lifespan)

    def _spawn_worker(self, worker_id: int, *, generation: int | None = None,
                      app: ASGIApp | None = None, run_lifespan: bool = True,
                      state: dict[str, Any] | None = None) -> _WorkerHandle:
        """Create and start one worker for slot *worker_id*."""
        return self._generations.spawn(worker_id, generation=generation, app=app,
                                       run_lifespan=run_lifespan, state=state)

    def _spawn_h3_worker(self, worker_id: int) -> None:
        """Start the HTTP/3 worker of UDP socket *worker_id* and wait until it is ready."""
        self._h3.spawn(worker_id)

    def _respawn_worker(self, worker_id: int) -> None:
        """Restart a crashed slot; skipped (and retried) while a reload holds the lock."""
        self._tcp.respawn_now(worker_id)

    def _watch(self) -> None:
        """Health loop: notice dead workers within ``WATCH_INTERVAL`` and respawn them."""
        while not self._stop.wait(WATCH_INTERVAL):
            now = time.monotonic()
            self._tcp.tick(now)
            self._h3.slots.tick(now)

    def _on_all_failed(self, reason: str) -> None:
        if self._config.reload:  # the next save brings a fresh generation: keep waiting
            self._emit(LogLine(level="error", message=reason + " (waiting for a fix to reload)"))
            return
        self._stop.announce(reason, error=True)
        self.exit_code = 1
        self._stop.request()

    def _on_fatal(self, reason: str) -> None:
        self._tcp.last_crash = reason
        self.exit_code = 1
        self._stop.request()

    def _signal_workers_start_draining(self) -> None:
        """Shutdown: every worker finishes in-flight requests and closes its connections."""
        self._generations.shutdown(self._config.timeout_graceful_shutdown)

    def _drain(self) -> None:
        """The stop (``supervision.stopping``): delay, stop accepting, drain, then force."""
        self._stop.announce("shutdown requested")
        self._generations.stop_all(self._config.timeout_graceful_shutdown, self._sockets)
        if self._stop.forced:
            self.exit_code = 130
        for sock in self._sockets + self._udp_sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _force_stop(self, handle: _WorkerHandle, join_timeout: float) -> None:
        """Process: SIGTERM then SIGKILL. Thread: close its connections, join."""
        handle.force_stop(join_timeout)

    def _install_signals(self) -> None:
        """SIGTERM/SIGINT → shutdown (SIGINT: no delay; 2nd → force), SIGHUP → reload."""
        install_signals(stop=self._on_stop_signal, force=self.force_exit,
                        reload=self.graceful_reload)

    def _on_stop_signal(self, name: str) -> None:
        self._stop.announce(name)
        self._stop.request(skip_delay=name == "SIGINT")  # a person at the terminal: no delay
