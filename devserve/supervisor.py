"""The Supervisor: owns the listening sockets and runs workers in numbered generations.

- Workers are threads (each gets a ``dup()`` of the listener) or spawned processes (they inherit
  it). The Supervisor never closes the listener before final shutdown, so connections arriving
  while workers change wait in the kernel backlog.
- ``graceful_reload()`` starts generation N+1, waits for readiness, promotes it, then drains N
  within a bounded grace. If N+1 fails to become ready it is discarded and N keeps serving.
- ``_lifecycle_lock`` serialises reloads, restarts and crash respawns; a reload or restart asked
  for while one runs is coalesced into one follow-up run, never lost, never run in parallel.
- A crash is charged to the worker *slot* (:class:`CrashBudget`), which survives respawns.
- Shutdown and reload are different signals: stopping a generation never stops the Supervisor.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from devserve.asgi.lifespan import LifespanFailed
from devserve.asgi.types import ASGIApp
from devserve.config import Config
from devserve.errors import AppImportError, DevserveError, LifespanStartupError
from devserve.lifecycle import (
    Event,
    GenerationPromoted,
    GenerationRetired,
    GenerationStarted,
    LifecycleCollector,
    LogLine,
    ReloadCompleted,
    ReloadFailed,
    ReloadStarted,
    ServerStopping,
    WorkerBudgetExhausted,
    WorkerCrashed,
    WorkerDraining,
    WorkerReady,
    WorkerRespawnScheduled,
    WorkerSpawned,
    WorkerStopped,
)
from devserve.reload.importer import user_traceback
from devserve.supervision.budget import CrashBudget
from devserve.supervision.child import process_main
from devserve.supervision.handles import (
    StartError,
    WorkerMode,
    _H3WorkerHandle,
    _parallel_join_targets,
    _target_id,
    _WorkerHandle,
    choose_mode,
    gil_enabled,
)
from devserve.workers.accept_distributor import AcceptDistributor
from devserve.workers.async_pool import AsyncPool
from devserve.workers.sync_worker import SyncWorker, queue_capacity
from devserve.workers.worker import Worker

__all__ = [
    "StartError",
    "Supervisor",
    "WorkerMode",
    "_H3WorkerHandle",
    "_WorkerHandle",
    "_parallel_join_targets",
    "_target_id",
    "choose_mode",
    "gil_enabled",
]

logger = logging.getLogger("devserve.error")

SyncApp = Callable[..., Any]

READY_TIMEOUT = 60.0
WATCH_INTERVAL = 0.1


class Supervisor:
    """Spawn and supervise ``config.workers`` workers as threads or processes."""

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
    ) -> None:
        self._config = config
        self._app = app if app is not None else sync_app
        self._app_path = app_path
        self._sync_app = sync_app
        # SyncWorkers serve WSGI apps (sync_app) and ASGI apps under --execution sync.
        self._sync_interface: str | None = (
            "wsgi" if sync_app is not None else "asgi" if config.execution == "sync" else None)
        self._distributor: AcceptDistributor | None = None  # thread mode: one for all generations
        self._pool: AsyncPool | None = None
        self._ssl_context = ssl_context
        self._collector = lifecycle_collector
        if mode is None:
            mode, reason = choose_mode(config, app_is_object=app_path is None,
                                       reload=config.reload)
        else:
            reason = "chosen by the caller"
        self._mode: WorkerMode = mode
        self.mode_reason = reason
        self._sockets: list[socket.socket] = []
        self._udp_sockets: list[socket.socket] = []
        self._handles: dict[int, _WorkerHandle] = {}
        self._h3_handles: dict[int, _H3WorkerHandle] = {}
        self._h3_app_ref: Any = None  # thread mode: AppRef that new HTTP/3 streams use
        self._h3_budgets: dict[int, CrashBudget] = {}
        self._h3_respawn_at: dict[int, float] = {}
        self._generation = 0
        self._budgets = {slot: CrashBudget() for slot in range(config.workers)}
        self._respawn_at: dict[int, float] = {}
        self._lifecycle_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._busy = False
        self._pending: Callable[[], None] | None = None
        self._shutdown_event = threading.Event()
        self._force_exit = False
        self._force_event = threading.Event()
        self._all_failed_reported = False
        self._stopping_emitted = False
        # Process mode: where the children's stdout/stderr lines go (a live display sets it;
        # otherwise children write to the terminal directly).
        self.output_sink: Callable[[str], None] | None = None
        self._lifespan_state: dict[str, Any] | None = None
        self.exit_code = 0
        self.last_crash: str | None = None
        self.reload_grace = config.reload_grace
        # Thread mode: returns a freshly imported app for a reload (None keeps the same app).
        self.app_loader: Callable[[], ASGIApp] | None = None
        # Applied to every generation's app (thread mode; process children apply their own).
        self.app_wrapper: Callable[[ASGIApp, int], ASGIApp] | None = None
        # Per-request events cost; workers get a collector only when a display wants them.
        self.worker_collector: LifecycleCollector | None = None
        self._mp = multiprocessing.get_context("spawn")

    # -- public API ------------------------------------------------------------------------
    @property
    def mode(self) -> WorkerMode:
        return self._mode

    @property
    def worker_count(self) -> int:
        return self._config.workers

    @property
    def generation(self) -> int:
        return self._generation

    def live_handles(self) -> list[_WorkerHandle]:
        """Handles of the current generation that are alive (for tests and displays)."""
        return [h for h in self._handles.values() if h.is_alive()]

    def set_lifespan_state(self, state: dict[str, Any]) -> None:
        self._lifespan_state = state
        for handle in self._handles.values():
            if handle.worker is not None:
                handle.worker.set_lifespan_state(state)

    def run(self, sockets: list[socket.socket], udp_sockets: list[socket.socket] | None = None
            ) -> int:
        """Start generation 1, supervise until shutdown, drain; returns the exit code."""
        self._sockets = sockets
        self._udp_sockets = udp_sockets or []
        self._install_signals()
        if self._sync_interface is not None and self._mode == "thread":
            self._setup_sync_infrastructure()
        with self._lifecycle_lock:
            handles, error = self._start_generation(1, self._app)
            if error is not None:
                message, tb = error.message, error.traceback
                if tb:
                    logger.error("%s", tb.rstrip())
                raise (LifespanStartupError(message) if "lifespan" in message
                       else AppImportError(message))
            self._promote(1, handles)
            for index in range(len(self._udp_sockets)):
                self._spawn_h3_worker(index)
        try:
            self._watch()
        finally:
            self._drain()
        return self.exit_code

    def shutdown(self) -> None:
        """Ask the Supervisor to stop (non-blocking); ``run()`` then drains and returns."""
        self._shutdown_event.set()

    def force_exit(self) -> None:
        """Second Ctrl+C: stop waiting for anything."""
        self._force_exit = True
        self._force_event.set()
        self._shutdown_event.set()

    def restart_workers(self) -> None:
        """Stop-then-start fallback for a reload (brief gap, queued connections wait)."""
        self._serialized(self._restart_workers_impl)

    def graceful_reload(self) -> None:
        """Zero-downtime rolling reload: start N+1, wait ready, promote, drain N."""
        self._serialized(self._graceful_reload_impl)

    # -- serialisation ---------------------------------------------------------------------
    def _serialized(self, impl: Callable[[], None]) -> None:
        """Run *impl* under the lifecycle lock; if one runs already, queue one follow-up."""
        with self._pending_lock:
            if self._busy:
                self._pending = impl
                return
            self._busy = True
        try:
            while not self._shutdown_event.is_set():
                with self._lifecycle_lock:
                    if not self._shutdown_event.is_set():
                        impl()
                with self._pending_lock:
                    # Decide and release "busy" in one critical section, so a request that
                    # arrives now either becomes the follow-up or finds us not busy.
                    if self._pending is None:
                        self._busy = False
                        return
                    impl, self._pending = self._pending, None
        except BaseException:
            with self._pending_lock:
                self._busy = False
                self._pending = None
            raise
        with self._pending_lock:
            self._busy = False
            self._pending = None

    # -- generations -----------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        if self._collector is not None:
            self._collector.emit(event)

    def _start_generation(self, generation: int, app: ASGIApp | None
                          ) -> tuple[dict[int, _WorkerHandle], StartError | None]:
        """Spawn every slot of *generation* and wait until each is ready (or one fails)."""
        self._emit(GenerationStarted(generation=generation, workers=self.worker_count))
        handles: dict[int, _WorkerHandle] = {}
        slots = list(range(self.worker_count))
        # Thread mode with several workers: slot 0 runs lifespan; the others share its state.
        if self._mode == "thread" and len(slots) > 1:
            first = self._spawn_worker(0, generation=generation, app=app, run_lifespan=True)
            handles[0] = first
            error = self._wait_ready([first])
            if error is not None:
                self._discard(handles)
                return {}, error
            state = first.worker.state.lifespan_state if first.worker is not None else None
            for slot in slots[1:]:
                handles[slot] = self._spawn_worker(
                    slot, generation=generation, app=app, run_lifespan=False, state=state
                )
        else:
            for slot in slots:
                handles[slot] = self._spawn_worker(slot, generation=generation, app=app)
        pending = [h for h in handles.values() if not (h.worker_id == 0 and len(slots) > 1
                                                        and self._mode == "thread")]
        error = self._wait_ready(pending)
        if error is not None:
            self._discard(handles)
            return {}, error
        return handles, None

    def _wait_ready(self, handles: list[_WorkerHandle]) -> StartError | None:
        deadline = time.monotonic() + READY_TIMEOUT
        for handle in handles:
            while not handle.ready.wait(0.05):
                if not handle.is_alive() and not handle.ready.is_set():
                    # Its last words may still be in the pipe: let the reader finish first.
                    handle.reader_done.wait(1.0)
                    if handle.error is None:
                        code = getattr(handle.target, "exitcode", None)
                        handle.error = f"worker exited during startup ({handle.ident}" + (
                            f", exit code {code})" if code is not None else ")")
                    break
                if time.monotonic() > deadline:
                    handle.error = "worker did not become ready in time"
                    break
                if self._shutdown_event.is_set():
                    return StartError("shutdown requested during startup")
            if handle.error is not None:
                return StartError(handle.error, handle.error_traceback, handle.error_location)
            self._emit(WorkerReady(slot=handle.worker_id, generation=handle.generation,
                                   ident=handle.ident))
        return None

    def _discard(self, handles: dict[int, _WorkerHandle]) -> None:
        for handle in handles.values():
            handle.expected_exit = True
            handle.force()
        _parallel_join_targets([h.target for h in handles.values()], 2.0)
        for handle in handles.values():
            if handle.is_alive():
                self._force_stop(handle, 1.0)
            self._emit(WorkerStopped(slot=handle.worker_id, generation=handle.generation,
                                     forced=handle.is_alive()))

    def _promote(self, generation: int, handles: dict[int, _WorkerHandle]) -> None:
        self._handles = handles
        self._generation = generation
        if self._h3_handles:
            self._promote_h3(generation, handles)
        self._emit(GenerationPromoted(generation=generation, workers=len(handles),
                                      mode=self._mode))

    def _retire(self, old: dict[int, _WorkerHandle], new: dict[int, _WorkerHandle],
                grace: float) -> int:
        """Drain *old* within *grace*, handing idle connections to *new* in thread mode."""
        new_workers = [h.worker for h in new.values() if h.worker is not None]
        for i, handle in enumerate(old.values()):
            if handle.worker is not None and new_workers:
                handle.worker.handoff = new_workers[i % len(new_workers)].adopt
            self._emit(WorkerDraining(slot=handle.worker_id, generation=handle.generation))
            handle.start_draining(grace)
        _parallel_join_targets([h.target for h in old.values()], grace + 1.0)
        forced = 0
        for handle in old.values():
            if handle.worker is not None:
                forced += handle.worker.forced_connections
            if handle.is_alive():
                self._force_stop(handle, 2.0)
            self._emit(WorkerStopped(slot=handle.worker_id, generation=handle.generation,
                                     forced=handle.is_alive()))
        return forced

    def _graceful_reload_impl(self) -> None:
        started = time.monotonic()
        generation = self._generation + 1
        strategy = "reimport" if self._mode == "thread" else "process-roll"
        self._emit(ReloadStarted(generation=generation, strategy=strategy))
        app = self._app
        phases: dict[str, float] = {}
        if self._mode == "thread" and self.app_loader is not None:
            try:
                app = self.app_loader()
            except DevserveError as exc:
                self._reload_failed(generation, strategy, exc.one_line(),
                                    getattr(exc, "location", None),
                                    getattr(exc, "traceback_text", None))
                return
            phases["import"] = time.monotonic() - started
        handles, error = self._start_generation(generation, app)
        if error is not None:
            self._reload_failed(generation, strategy, error.message, error.location,
                                error.traceback)
            return
        phases["ready"] = time.monotonic() - started
        old = self._handles
        self._app = app
        self._promote(generation, handles)
        for budget in self._budgets.values():
            budget.reset()
        self._all_failed_reported = False
        self._respawn_at.clear()
        forced = self._retire(old, handles, self.reload_grace)
        phases["drained"] = time.monotonic() - started
        phases["total"] = phases["drained"]
        for gen in sorted({h.generation for h in old.values()}):
            self._emit(GenerationRetired(generation=gen, forced_connections=forced))
        self._emit(ReloadCompleted(generation=generation, strategy=strategy, phases=phases))

    def _reload_failed(self, generation: int, strategy: str, message: str,
                       location: str | None, tb: str | None) -> None:
        self._emit(ReloadFailed(generation=generation, strategy=strategy, error=message,
                                location=location, traceback=tb,
                                serving_generation=self._generation))
        if self._mode == "process" and self._config.livereload:
            payload = {"error": message, "location": location, "traceback": tb}
            for handle in self._handles.values():
                handle._command(("livereload-error", payload))

    def _restart_workers_impl(self) -> None:
        generation = self._generation + 1
        started = time.monotonic()
        self._emit(ReloadStarted(generation=generation, strategy="restart"))
        app = self._app
        if self._mode == "thread" and self.app_loader is not None:
            try:
                app = self.app_loader()
            except DevserveError as exc:
                self._reload_failed(generation, "restart", exc.one_line(),
                                    getattr(exc, "location", None),
                                    getattr(exc, "traceback_text", None))
                return
        old = self._handles
        forced = self._retire(old, {}, self.reload_grace)
        self._handles = {}
        for gen in sorted({h.generation for h in old.values()}):
            self._emit(GenerationRetired(generation=gen, forced_connections=forced))
        handles, error = self._start_generation(generation, app)
        if error is not None:
            # Nothing serves now: fall back to the previous app so the slot is not empty.
            self._reload_failed(generation, "restart", error.message, error.location,
                                error.traceback)
            handles, error = self._start_generation(generation, self._app)
            if error is not None:
                self.last_crash = error.message
                self.exit_code = 1
                self._shutdown_event.set()
                return
        else:
            self._app = app
        self._promote(generation, handles)
        total = time.monotonic() - started
        self._emit(ReloadCompleted(generation=generation, strategy="restart",
                                   phases={"total": total}))

    # -- spawning --------------------------------------------------------------------------
    def _setup_sync_infrastructure(self) -> None:
        """Create AsyncPool and AcceptDistributor for sync worker mode (thread mode): both
        outlive generations, so a reload never stops accepting; torn down after the workers."""
        ctx = self._ssl_context
        if ctx is not None:
            ctx.set_alpn_protocols(["http/1.1"])  # SyncWorkers speak HTTP/1.1 only
        self._pool = AsyncPool(1, loop_setting=self._config.loop)
        self._distributor = AcceptDistributor(
            self._sockets[0].dup(), capacity=queue_capacity(self._config, self.worker_count),
            keep_alive_timeout=self._config.timeout_keep_alive, tls=ctx is not None)
        self._distributor.start()

    def _teardown_sync_infrastructure(self) -> None:
        """After every SyncWorker stopped: the distributor first, then the pool they used."""
        if self._distributor is not None:
            self._distributor.close()
        if self._pool is not None:
            self._pool.close()

    def _create_worker(self, worker_id: int, socket_index: int, *, generation: int = 0,
                       app: ASGIApp | None = None, run_lifespan: bool = True
                       ) -> Worker | SyncWorker:
        """A thread-mode worker: a SyncWorker on the shared distributor for WSGI or
        ``--execution sync``, else an async Worker on a ``dup()`` of listener *socket_index*."""
        the_app = app if app is not None else self._app
        assert the_app is not None
        if self._sync_interface is not None:
            assert self._distributor is not None and self._pool is not None
            if self.app_wrapper is not None and self._sync_interface == "asgi":
                the_app = self.app_wrapper(the_app, generation)
            sync = SyncWorker(
                self._config, the_app, self._distributor, self._pool,
                interface=self._sync_interface, slot=worker_id, generation=generation,
                collector=self.worker_collector, run_lifespan=run_lifespan,
                ssl_context=self._ssl_context,
            )
            if not run_lifespan and self._lifespan_state is not None:
                sync.set_lifespan_state(self._lifespan_state)
            return sync
        sock = self._sockets[socket_index].dup()
        if self.app_wrapper is not None:
            the_app = self.app_wrapper(the_app, generation)
        worker = Worker(
            self._config, the_app, sock, slot=worker_id, generation=generation,
            collector=self.worker_collector, run_lifespan=run_lifespan,
            ssl_context=self._ssl_context,
        )
        if not run_lifespan and self._lifespan_state is not None:
            worker.set_lifespan_state(self._lifespan_state)
        return worker

    def _spawn_worker(self, worker_id: int, *, generation: int | None = None,
                      app: ASGIApp | None = None, run_lifespan: bool = True,
                      state: dict[str, Any] | None = None) -> _WorkerHandle:
        """Create and start one worker for slot *worker_id*."""
        gen = self._generation if generation is None else generation
        if self._mode == "thread":
            worker = self._create_worker(worker_id, 0, generation=gen, app=app,
                                         run_lifespan=run_lifespan)
            if state is not None:
                worker.set_lifespan_state(state)
            thread = threading.Thread(target=self._run_thread_worker, args=(worker,),
                                      name=f"devserve-g{gen}-w{worker_id}", daemon=True)
            handle = _WorkerHandle(worker_id, thread, worker, gen)
            thread.start()
            threading.Thread(target=self._forward_thread_ready, args=(handle,),
                             daemon=True).start()
        else:
            parent, child = self._mp.Pipe()
            config = self._config
            out_parent = out_child = None
            if self.output_sink is not None:
                out_parent, out_child = socket.socketpair()
            process = self._mp.Process(
                target=process_main,
                args=(config, self._sockets[0], worker_id, gen, child,
                      self.worker_collector is not None, True, out_child),
                name=f"devserve-g{gen}-w{worker_id}",
                daemon=True,
            )
            handle = _WorkerHandle(worker_id, process, None, gen)
            handle.conn = parent
            process.start()
            child.close()
            threading.Thread(target=self._read_process, args=(handle,), daemon=True).start()
            if out_parent is not None and out_child is not None:
                out_child.close()
                threading.Thread(target=self._relay_output, args=(out_parent,),
                                 daemon=True).start()
        self._emit(WorkerSpawned(slot=worker_id, generation=gen, ident=handle.ident))
        return handle

    @staticmethod
    def _run_thread_worker(worker: Worker | SyncWorker) -> None:
        try:
            worker.run()
        except BaseException:
            logger.error("worker %d crashed:\n%s", worker.slot, traceback.format_exc().rstrip())

    @staticmethod
    def _forward_thread_ready(handle: _WorkerHandle) -> None:
        worker = handle.worker
        assert worker is not None
        worker.ready.wait()
        if worker.startup_error is not None:
            err = worker.startup_error
            handle.error = f"lifespan startup failed: {err}"
            reported = isinstance(err, LifespanFailed)  # the app said so; no traceback to show
            handle.error_traceback = None if reported else user_traceback(err)
        handle.ready.set()

    def _relay_output(self, sock: socket.socket) -> None:
        """Lines a process worker printed, handed to the display (above its live view)."""
        with sock, sock.makefile("r", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                sink = self.output_sink
                if sink is not None:
                    sink(line.rstrip("\n"))

    def _read_process(self, handle: _WorkerHandle) -> None:
        conn = handle.conn
        assert conn is not None
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "ready":
                handle.ready.set()
            elif kind == "failed":
                handle.error = message[1]
                handle.error_traceback = message[2]
                handle.error_location = message[3] if len(message) > 3 else None
                handle.ready.set()
            elif kind == "event" and self.worker_collector is not None:
                self.worker_collector.emit(message[1])
        handle.reader_done.set()

    def _spawn_h3_worker(self, worker_id: int) -> None:
        """Start the HTTP/3 worker of UDP socket *worker_id* and wait until it is ready: a
        thread sharing the generation's app through an ``AppRef`` (thread mode) or a spawned
        process importing the app itself (process mode)."""
        from devserve.workers.h3_worker import H3Worker, h3_process_main

        gen = self._generation
        sock = self._udp_sockets[worker_id]
        slot = self.worker_count + worker_id  # its own dashboard row, after the TCP slots
        if self._mode == "thread":
            worker = H3Worker(self._config, self._h3_ref(gen, self._handles), sock.dup(),
                              slot=slot, collector=self.worker_collector)
            thread = threading.Thread(target=worker.run, name=f"devserve-h3-{worker_id}",
                                      daemon=True)
            handle = _H3WorkerHandle(worker_id, thread)
            handle.worker = worker
            thread.start()
        else:
            parent, child = self._mp.Pipe()
            process = self._mp.Process(target=h3_process_main, name=f"devserve-g{gen}-h3",
                                       args=(self._config, sock, slot, gen, child), daemon=True)
            handle = _H3WorkerHandle(worker_id, process)
            handle.conn = parent
            process.start()
            child.close()
        handle.generation = gen
        self._h3_handles[worker_id] = handle
        self._emit(WorkerSpawned(slot=slot, generation=gen, ident=handle.ident))
        if handle.worker is not None:
            ok = handle.worker.ready.wait(READY_TIMEOUT) and handle.worker.startup_error is None
        else:
            assert handle.conn is not None
            try:
                message = handle.conn.recv() if handle.conn.poll(READY_TIMEOUT) else ("timeout",)
            except (EOFError, OSError):
                message = ("failed", "the HTTP/3 worker exited during startup")
            ok = message[0] == "ready"
            handle.error = None if ok else str(message[1:] or message)
        if ok:
            self._emit(WorkerReady(slot=slot, generation=gen, ident=handle.ident))
        else:
            logger.error("HTTP/3 worker %d did not start: %s", worker_id,
                         handle.error or getattr(handle.worker, "startup_error", None))

    def _h3_ref(self, generation: int, handles: dict[int, _WorkerHandle]) -> Any:
        """An AppRef for *generation*: its (wrapped) app and the lifespan state of its slot 0."""
        from devserve.serve.h3 import AppRef

        assert self._app is not None
        app = self._app
        if self.app_wrapper is not None:
            app = self.app_wrapper(app, generation)
        first = handles.get(0)
        state = self._lifespan_state
        if first is not None and first.worker is not None:
            state = first.worker.state.lifespan_state
        return AppRef(app, generation, state)

    def _promote_h3(self, generation: int, handles: dict[int, _WorkerHandle]) -> None:
        """Thread mode: new HTTP/3 streams go to *generation* from now on (connections and
        running streams stay). Process mode: the child holds the old code, so it sends GOAWAY,
        finishes in-flight streams within the reload grace and exits; a fresh one starts."""
        if self._mode == "thread":
            ref = self._h3_ref(generation, handles)
            for handle in self._h3_handles.values():
                if handle.worker is not None:
                    handle.worker.app_ref = ref  # one assignment: streams never see a mix
            return
        for worker_id, handle in list(self._h3_handles.items()):
            handle.stop(self.reload_grace)
            self._stop_h3(handle, self.reload_grace + 1.0)
            self._spawn_h3_worker(worker_id)

    def _stop_h3(self, handle: _H3WorkerHandle, wait: float) -> None:
        handle.target.join(wait)
        if handle.is_alive():
            handle.stop(0.0, force=True)
            handle.target.join(2.0)
            if handle.is_alive() and not isinstance(handle.target, threading.Thread):
                handle.target.kill()
                handle.target.join(2.0)
        self._emit(WorkerStopped(slot=self.worker_count + handle.worker_id,
                                 generation=handle.generation, forced=handle.is_alive()))

    # -- health ----------------------------------------------------------------------------
    def _watch(self) -> None:
        """Health loop: notice dead workers within ``WATCH_INTERVAL`` and respawn them."""
        while not self._shutdown_event.wait(WATCH_INTERVAL):
            now = time.monotonic()
            for slot, handle in list(self._handles.items()):
                if handle.is_alive() or handle.expected_exit or slot in self._respawn_at:
                    continue
                if self._budgets[slot].failed:
                    continue
                if self._retired(handle):
                    logger.info("Worker %d retired after --limit-max-requests; replacing it",
                                slot)
                    self._respawn_at[slot] = now
                    continue
                self._on_crash(slot, handle, now)
            for slot, when in list(self._respawn_at.items()):
                if now >= when:
                    self._respawn_worker(slot)
            self._watch_h3(now)
            if self._budgets and all(b.failed for b in self._budgets.values()) \
                    and not self._all_failed_reported:
                self._all_failed_reported = True
                reason = ("Every worker slot exhausted its restart budget; last crash: "
                          f"{self.last_crash}")
                if self._config.reload:
                    # Under --reload the next save brings a fresh generation: keep waiting.
                    self._emit(LogLine(level="error",
                                       message=reason + " (waiting for a fix to reload)"))
                    continue
                self._emit_stopping(reason, error=True)
                self.exit_code = 1
                self._shutdown_event.set()

    def _watch_h3(self, now: float) -> None:
        """HTTP/3 workers crash-restart like TCP slots: own budget, same backoff rules."""
        for worker_id, handle in list(self._h3_handles.items()):
            budget = self._h3_budgets.setdefault(worker_id, CrashBudget())
            due = self._h3_respawn_at.get(worker_id)
            if due is not None:
                if now >= due and self._lifecycle_lock.acquire(blocking=False):
                    try:
                        self._h3_respawn_at.pop(worker_id, None)
                        if not self._shutdown_event.is_set():
                            self._spawn_h3_worker(worker_id)
                    finally:
                        self._lifecycle_lock.release()
                continue
            if handle.is_alive() or handle.expected_exit or budget.failed:
                continue
            slot = self.worker_count + worker_id
            code = getattr(handle.target, "exitcode", None)
            reason = handle.error or (f"exit code {code}" if code is not None else "thread died")
            self._emit(WorkerCrashed(slot=slot, generation=handle.generation, reason=reason))
            decision = budget.on_crash(now)
            if decision.allowed:
                self._h3_respawn_at[worker_id] = now + decision.backoff
                self._emit(WorkerRespawnScheduled(
                    slot=slot, ident=handle.ident, reason=reason,
                    restarts_used=decision.restarts_used, budget=decision.budget,
                    window=budget.window, backoff=decision.backoff))
            else:
                self._emit(WorkerBudgetExhausted(slot=slot, restarts_used=decision.restarts_used,
                                                 budget=decision.budget, reason=reason,
                                                 window=budget.window))

    @staticmethod
    def _retired(handle: _WorkerHandle) -> bool:
        if handle.worker is not None:
            return handle.worker.retired and handle.worker.startup_error is None
        return getattr(handle.target, "exitcode", None) == 0

    def _on_crash(self, slot: int, handle: _WorkerHandle, now: float) -> None:
        code = getattr(handle.target, "exitcode", None)
        reason = handle.error or (f"exit code {code}" if code is not None else "thread died")
        self.last_crash = f"slot {slot} ({handle.ident}): {reason}"
        self._emit(WorkerCrashed(slot=slot, generation=handle.generation, reason=reason,
                                 traceback=handle.error_traceback))
        decision = self._budgets[slot].on_crash(now)
        if decision.allowed:
            self._respawn_at[slot] = now + decision.backoff
            self._emit(WorkerRespawnScheduled(
                slot=slot, ident=handle.ident, reason=reason,
                restarts_used=decision.restarts_used, budget=decision.budget,
                window=self._budgets[slot].window, backoff=decision.backoff))
        else:
            self._emit(WorkerBudgetExhausted(slot=slot, restarts_used=decision.restarts_used,
                                             budget=decision.budget, reason=reason,
                                             window=self._budgets[slot].window))

    def _respawn_worker(self, worker_id: int) -> None:
        """Restart a crashed slot; skipped (and retried) while a reload holds the lock."""
        if not self._lifecycle_lock.acquire(blocking=False):
            return
        try:
            self._respawn_at.pop(worker_id, None)
            old = self._handles.get(worker_id)
            if old is None or old.is_alive() or self._shutdown_event.is_set():
                return
            state = self._lifespan_state
            if self._mode == "thread" and worker_id != 0 and 0 in self._handles:
                first = self._handles[0].worker
                state = first.state.lifespan_state if first is not None else state
            handle = self._spawn_worker(
                worker_id, app=self._app,
                run_lifespan=not (self._mode == "thread" and self.worker_count > 1
                                  and worker_id != 0),
                state=state,
            )
            self._handles[worker_id] = handle
            error = self._wait_ready([handle])
            if error is not None:
                handle.error = error.message
        finally:
            self._lifecycle_lock.release()

    # -- shutdown --------------------------------------------------------------------------
    def _signal_workers_start_draining(self) -> None:
        """Shutdown: every worker answers new requests with 503 and finishes in-flight ones."""
        for handle in self._handles.values():
            self._emit(WorkerDraining(slot=handle.worker_id, generation=handle.generation))
            handle.shutdown(self._config.timeout_graceful_shutdown)

    def _emit_stopping(self, reason: str, *, error: bool = False) -> None:
        """One ServerStopping per run, whoever asked first (signal, key, crash budget)."""
        if not self._stopping_emitted:
            self._stopping_emitted = True
            self._emit(ServerStopping(reason=reason, error=error))

    def _drain(self) -> None:
        """Stop every worker within ``--timeout-graceful-shutdown`` (per worker), then force."""
        grace = self._config.timeout_graceful_shutdown
        self._emit_stopping("shutdown requested")
        self._signal_workers_start_draining()
        handles = list(self._handles.values())
        h3_handles = list(self._h3_handles.values())
        for h3 in h3_handles:
            h3.stop(grace)  # H3 GOAWAY; in-flight streams finish within the grace
        deadline = time.monotonic() + grace + 1.0
        # Wait in short steps so a second Ctrl+C (force_exit) cuts the wait short.
        while (
            (any(h.is_alive() for h in handles) or any(h.is_alive() for h in h3_handles))
            and time.monotonic() < deadline
            and not self._force_exit
        ):
            self._force_event.wait(0.05)
        if self._force_exit:
            self.exit_code = 130
        for handle in handles:
            if handle.is_alive():
                self._force_stop(handle, 2.0)
            self._emit(WorkerStopped(slot=handle.worker_id, generation=handle.generation,
                                     forced=handle.is_alive()))
        for h3 in h3_handles:
            self._stop_h3(h3, 0.0)
        self._teardown_sync_infrastructure()
        for sock in self._sockets + self._udp_sockets:
            try:
                sock.close()
            except OSError:
                pass

    def _force_stop(self, handle: _WorkerHandle, join_timeout: float) -> None:
        """Process: SIGTERM then SIGKILL. Thread: close its connections (daemon threads cannot
        be killed; they die with the process)."""
        handle.force()
        target = handle.target
        if isinstance(target, threading.Thread):
            target.join(join_timeout)
            return
        target.join(min(join_timeout, 0.5))
        if target.is_alive():
            target.terminate()
            target.join(join_timeout)
        if target.is_alive():
            target.kill()
            target.join(join_timeout)

    def _install_signals(self) -> None:
        """SIGINT/SIGTERM → shutdown (second SIGINT → force), SIGHUP → graceful reload.

        Only possible on the main thread; elsewhere the caller owns signal handling.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        interrupts = {"count": 0}

        def on_stop(signum: int, frame: Any) -> None:
            if signum == signal.SIGINT:
                interrupts["count"] += 1
                if interrupts["count"] > 1:
                    self.force_exit()
                    return
            self._emit_stopping(signal.Signals(signum).name)
            self.shutdown()

        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGTERM, on_stop)
        if hasattr(signal, "SIGHUP"):
            def on_hup(signum: int, frame: Any) -> None:
                threading.Thread(target=self.graceful_reload, name="devserve-sighup",
                                 daemon=True).start()

            signal.signal(signal.SIGHUP, on_hup)
