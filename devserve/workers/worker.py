"""The asyncio worker: one event loop (uvloop when available) serving the socket it is given.

Thread-safe control surface (called from the Supervisor's thread): ``start_draining()`` for a
reload (stop accepting, finish in-flight, close), ``shutdown()`` for a stop (keep answering new
requests with 503 + Retry-After while in-flight ones finish), ``force_stop()``. Both drains are
bounded by ``grace`` seconds; what remains is closed. Readiness is a ``threading.Event`` set only
after lifespan startup succeeded and the listener accepts.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from devserve.asgi.lifespan import Lifespan, LifespanFailed
from devserve.asgi.types import ASGIApp
from devserve.config import Config
from devserve.lifecycle import LifecycleCollector, WorkerStats
from devserve.net.tls import create_ssl_context, tls_enabled
from devserve.serve.sniff import protocol_factory
from devserve.serve.state import WorkerState

logger = logging.getLogger("devserve.error")

TIMEOUT_SWEEP = 0.25  # seconds between checks of connection deadlines (their precision)


def new_event_loop(setting: str) -> asyncio.AbstractEventLoop:
    """A fresh loop per ``--loop``: uvloop if asked for (or auto and installed), else asyncio."""
    if setting in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if setting == "uvloop":
                raise
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


class Worker:
    """Serves HTTP on one listening socket from its own event loop."""

    def __init__(
        self,
        config: Config,
        app: ASGIApp,
        sock: socket.socket,
        *,
        slot: int = 0,
        generation: int = 0,
        collector: LifecycleCollector | None = None,
        run_lifespan: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.sock = sock
        self.slot = slot
        self.generation = generation
        self.run_lifespan = run_lifespan
        if ssl_context is None and tls_enabled(config):
            # Process workers get no context (an SSLContext does not pickle): build the same
            # one here; the Supervisor already created any development certificate.
            ssl_context = create_ssl_context(config, announce=False)
        self.ssl_context = ssl_context
        self.grace = config.timeout_graceful_shutdown
        self.state = WorkerState(
            config, app, slot=slot, generation=generation, collector=collector
        )
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self.startup_error: BaseException | None = None
        self.forced_connections = 0
        self.retired = False  # exited by itself after --limit-max-requests: not a crash
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._last_stats: tuple[int, int, int] | None = None
        self._mode = "running"  # running | draining | shutdown | force
        # Thread-mode reload: where idle keep-alive connections go instead of being closed.
        self.handoff: Callable[[socket.socket], None] | None = None

    # -- TCPWorker -------------------------------------------------------------------------
    def run(self) -> None:
        loop = new_event_loop(self.config.loop)
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # a bug here must surface as a crash, not a hang
            if self.startup_error is None:
                self.startup_error = exc
            raise
        finally:
            self.ready.set()
            try:
                _cancel_all(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                self.stopped.set()

    def set_lifespan_state(self, state: dict[str, Any]) -> None:
        self.state.lifespan_state = state

    def start_draining(self) -> None:
        self._request("draining")

    def is_idle(self) -> bool:
        return not self.state.tasks

    # -- more control ----------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop: new requests get 503 while in-flight ones finish within ``grace``."""
        self._request("shutdown")

    def force_stop(self) -> None:
        """Close every connection now and exit (after a grace ran out)."""
        self._request("force")

    def adopt(self, sock: socket.socket) -> None:
        """Serve an already-accepted connection (handed over by a draining generation)."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._mode != "running":
            sock.close()
            return
        state = self.state

        async def _adopt() -> None:
            try:
                # Cleartext only (TLS connections are never handed over): sniff h2c again.
                await loop.connect_accepted_socket(protocol_factory(state, loop, "http"), sock)
            except OSError:
                sock.close()

        try:
            asyncio.run_coroutine_threadsafe(_adopt(), loop)
        except RuntimeError:
            sock.close()

    @property
    def open_connections(self) -> int:
        return len(self.state.connections)

    @property
    def in_flight(self) -> int:
        return len(self.state.tasks)

    def _request(self, mode: str) -> None:
        loop = self._loop
        if _RANK[mode] <= _RANK[self._mode]:
            return  # modes only escalate: running < draining < shutdown < force
        self._mode = mode
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._apply_mode)
        except RuntimeError:
            pass  # loop closed between the check and the call

    # -- the loop side ---------------------------------------------------------------------
    def _apply_mode(self) -> None:
        state = self.state
        if self._mode == "draining":
            state.draining = True
            handoff = state.handoff = self.handoff
            for conn in list(state.connections):
                sock = conn.detach_if_idle() if handoff is not None else None
                if sock is not None and handoff is not None:
                    handoff(sock)
                else:
                    conn.start_draining()
        elif self._mode == "shutdown":
            state.shutting_down = True
            for conn in list(state.connections):
                conn.start_draining()
        elif self._mode == "force":
            for conn in list(state.connections):
                conn.force_close()
        if self._stop is not None:
            self._stop.set()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        state = self.state
        if self.config.limit_max_requests is not None:
            state.max_requests_reached = self._stop
        lifespan: Lifespan | None = None
        if self.run_lifespan and self.config.lifespan != "off":
            lifespan = Lifespan(state.app, self.config.lifespan)
            try:
                await lifespan.startup()
            except LifespanFailed as exc:
                self.startup_error = exc
                return
            if lifespan.supported:
                state.lifespan_state = lifespan.state
        scheme = "https" if self.ssl_context is not None else "http"
        server = await loop.create_server(
            protocol_factory(state, loop, scheme),
            sock=self.sock,
            backlog=self.config.backlog,
            ssl=self.ssl_context,
            ssl_handshake_timeout=10.0 if self.ssl_context is not None else None,
        )
        self._sweep_handle = loop.call_later(TIMEOUT_SWEEP, self._sweep_timeouts, loop)
        if self.generation <= 1:
            # Start-up objects (the app, its modules) live forever: keep them out of GC scans
            # so full collections under load stay short. Not after a reload: the previous
            # generation's cyclic garbage must stay collectable.
            gc.freeze()
        self.ready.set()
        if self._mode != "running":
            self._apply_mode()
        await self._stop.wait()
        if self._mode == "running":
            self.retired = True  # --limit-max-requests reached: retire like a reload
            self._mode = "draining"
            self._apply_mode()
        if self._mode == "draining":
            server.close()
        await self._wait_idle(self.grace)
        server.close()
        self.forced_connections = len(state.connections)
        for conn in list(state.connections):
            conn.force_close()
        if state.tasks:
            # Give cancelled/aborted cycles a moment to observe the disconnect and finish.
            await asyncio.wait(list(state.tasks), timeout=1.0)
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        if lifespan is not None:
            await lifespan.shutdown(timeout=self.grace)

    def _sweep_timeouts(self, loop: asyncio.AbstractEventLoop) -> None:
        """One timer per worker enforces every connection's idle and header deadlines."""
        now = loop.time()
        state = self.state
        for conn in list(state.connections):
            conn.check_timeouts(now)
        if state.collector is not None:
            stats = (len(state.connections), len(state.tasks), state.total_requests)
            if stats != self._last_stats:
                self._last_stats = stats
                state.collector.emit(WorkerStats(
                    slot=self.slot, generation=self.generation, connections=stats[0],
                    in_flight=stats[1], requests=stats[2]))
        self._sweep_handle = loop.call_later(TIMEOUT_SWEEP, self._sweep_timeouts, loop)

    async def _wait_idle(self, grace: float) -> None:
        """Wait (bounded by *grace*) until no app request is in flight and every connection
        open when the drain began has closed. Idle keep-alive connections get a short grace
        to carry one more request (answered with ``Connection: close``), then close; during a
        shutdown, connections accepted later only get 503s and are not waited for."""
        deadline = time.monotonic() + grace
        state = self.state
        initial = set(state.connections)
        while time.monotonic() < deadline and self._mode != "force":
            busy = [t for t in state.tasks if not t.done()]
            if not busy and not (initial & state.connections):
                return
            if busy:
                await asyncio.wait(busy, timeout=min(0.05, max(0.0, deadline - time.monotonic())))
            else:
                await asyncio.sleep(0.01)


_RANK = {"running": 0, "draining": 1, "shutdown": 2, "force": 3}


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
