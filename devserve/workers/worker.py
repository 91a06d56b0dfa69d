"""The asyncio worker: one event loop (uvloop when available) serving the socket it is given.

Thread-safe control surface (called from the Supervisor's thread): ``start_draining()`` for a
reload (stop accepting, finish in-flight, close), ``shutdown()`` for a stop (keep answering new
requests with 503 + Retry-After while in-flight ones finish), ``force_stop()``. Both drains are
bounded by ``grace`` seconds; what remains is closed. Readiness is a ``threading.Event`` set only
after lifespan startup succeeded and the listener accepts. The lifecycle itself is
:class:`LoopWorker`'s; this module says how to serve TCP and how to drain its connections.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl

from devserve.asgi.types import ASGIApp
from devserve.config import Config
from devserve.lifecycle import LifecycleCollector
from devserve.net.tls import create_ssl_context, tls_enabled
from devserve.serve.sniff import protocol_factory
from devserve.serve.state import WorkerState
from devserve.workers.base import DRAINING, FORCE, RUNNING, SHUTDOWN, LoopWorker

TIMEOUT_SWEEP = 0.25  # seconds between checks of connection deadlines (their precision)


class Worker(LoopWorker):
    """Serves HTTP on one listening socket from its own event loop."""

    TICK = TIMEOUT_SWEEP

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
        super().__init__(
            config,
            WorkerState(config, app, slot=slot, generation=generation, collector=collector),
            run_lifespan=run_lifespan,
        )
        self.sock = sock
        if ssl_context is None and tls_enabled(config):
            # Process workers get no context (an SSLContext does not pickle): build the same
            # one here; the Supervisor already created any development certificate.
            ssl_context = create_ssl_context(config, announce=False)
        self.ssl_context = ssl_context
        self._server: asyncio.Server | None = None

    def adopt(self, sock: socket.socket) -> None:
        """Serve an already-accepted connection (handed over by a draining generation)."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._mode != RUNNING:
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

    # -- LoopWorker hooks ------------------------------------------------------------------
    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        state = self.state
        if self.config.limit_max_requests is not None:
            state.max_requests_reached = self._stop
        scheme = "https" if self.ssl_context is not None else "http"
        self._server = await loop.create_server(
            protocol_factory(state, loop, scheme),
            sock=self.sock,
            backlog=self.config.backlog,
            ssl=self.ssl_context,
            ssl_handshake_timeout=10.0 if self.ssl_context is not None else None,
        )
        if self.generation <= 1:
            # Start-up objects (the app, its modules) live forever: keep them out of GC scans
            # so full collections under load stay short. Not after a reload: the previous
            # generation's cyclic garbage must stay collectable.
            gc.freeze()

    def _on_mode(self, mode: str) -> None:
        state = self.state
        if mode == DRAINING:
            state.draining = True
            handoff = state.handoff = self.handoff
            for conn in list(state.connections):
                sock = conn.detach_if_idle() if handoff is not None else None
                if sock is not None and handoff is not None:
                    handoff(sock)
                else:
                    conn.start_draining()
        elif mode == SHUTDOWN:
            state.shutting_down = True
            for conn in list(state.connections):
                conn.start_draining()
        elif mode == FORCE:
            for conn in list(state.connections):
                conn.force_close()

    async def _close(self) -> None:
        """Wait (bounded by ``grace``) until no app request is in flight and every connection
        open when the drain began has closed. Idle keep-alive connections get a short grace
        to carry one more request (answered with ``Connection: close``), then close; during a
        shutdown, connections accepted later only get 503s and are not waited for."""
        server = self._server
        assert server is not None
        state = self.state
        if self._mode == DRAINING:
            server.close()
        initial = set(state.connections)
        await self._drain(lambda: not any(not t.done() for t in state.tasks)
                          and not (initial & state.connections))
        server.close()
        self.forced_connections = len(state.connections)
        for conn in list(state.connections):
            conn.force_close()
        await self._settle_tasks()

    def _on_tick(self, now: float) -> None:
        """One timer per worker enforces every connection's idle and header deadlines."""
        for conn in list(self.state.connections):
            conn.check_timeouts(now)
