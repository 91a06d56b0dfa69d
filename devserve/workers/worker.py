"""The asyncio worker: one event loop (uvloop when available) serving the socket it is given.

Thread-safe control surface (called from the Supervisor's thread): ``start_draining()`` for a
reload (stop accepting, finish in-flight, close), ``stop_accepting()`` and then ``shutdown()``
for a stop (finish in-flight requests, answer what still arrives on open connections with
``Connection: close``), ``force_stop()``. Both drains are bounded by ``grace`` seconds; what
remains is closed. Readiness is a ``threading.Event`` set only after lifespan startup succeeded
and the listener accepts. The lifecycle itself is :class:`LoopWorker`'s; this module says how to
serve TCP and how to drain its connections.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import ssl
import threading

from devserve.asgi.types import ASGIApp
from devserve.config import Config
from devserve.lifecycle import LifecycleCollector
from devserve.net.tls import create_ssl_context, tls_enabled
from devserve.serve.sniff import protocol_factory
from devserve.serve.state import WorkerState
from devserve.workers.base import DRAINING, FORCE, SHUTDOWN, LoopWorker

TIMEOUT_SWEEP = 0.25  # seconds between checks of connection deadlines (their precision)

logger = logging.getLogger("devserve.error")


def accept_backlog(listener: socket.socket) -> list[socket.socket]:
    """Accept every connection the kernel still queues on *listener* (non-blocking, until
    EAGAIN), then close it: closed as the listener's last fd, new connections are refused from
    here on, and none that was queued is reset."""
    accepted: list[socket.socket] = []
    with listener:
        listener.setblocking(False)
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                logger.error("accept failed: %s", exc)
                break
            accepted.append(sock)
    return accepted


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
        self._listening = True  # until stop_accepting (or the drain) closes the listener
        self._connecting: set[asyncio.Task[None]] = set()  # accepted, not yet connections
        # Hand-overs from a draining generation arrive on its thread: queued here until the
        # loop takes them, so none can slip past this worker's own drain (and be dropped).
        self._adopt_lock = threading.Lock()
        self._adopted: list[socket.socket] = []
        self._adopt_closed = False

    def adopt(self, sock: socket.socket) -> None:
        """Serve an idle connection handed over by a draining generation (any thread)."""
        with self._adopt_lock:
            if self._adopt_closed:
                sock.close()  # this worker has ended (only after its own drain)
                return
            self._adopted.append(sock)
        loop = self._loop
        if loop is None:
            return  # taken once the loop runs (or closed by the teardown)
        try:
            loop.call_soon_threadsafe(self._take_adopted)
        except RuntimeError:
            pass  # the loop closed meanwhile: the teardown closes what is queued

    def _take_adopted(self) -> None:
        """On the loop: serve what was handed over; while this worker drains too (reloads in
        quick succession), pass each connection on to the newest generation."""
        with self._adopt_lock:
            socks, self._adopted = self._adopted, []
        loop = asyncio.get_running_loop()
        for sock in socks:
            handoff = self.state.handoff if self._mode == DRAINING else None
            if handoff is not None:
                handoff(sock)
            elif self._mode == FORCE:
                sock.close()
            else:
                # Cleartext only (TLS connections are never handed over): sniff h2c again.
                task = loop.create_task(self._connect(sock, None))
                self._connecting.add(task)
                task.add_done_callback(self._connecting.discard)

    def _end_adoption(self) -> int:
        """No more hand-overs: close what is still queued; returns how many."""
        with self._adopt_lock:
            self._adopt_closed = True
            socks, self._adopted = self._adopted, []
        for sock in socks:
            sock.close()
        return len(socks)

    async def _connect(self, sock: socket.socket, ctx: ssl.SSLContext | None) -> None:
        """Serve *sock*, accepted elsewhere, like a connection our server accepted."""
        loop = asyncio.get_running_loop()
        scheme = "https" if ctx is not None else "http"
        try:
            await loop.connect_accepted_socket(
                protocol_factory(self.state, loop, scheme), sock, ssl=ctx,
                ssl_handshake_timeout=10.0 if ctx is not None else None)
        except (OSError, ssl.SSLError, TimeoutError):
            sock.close()

    def stop_accepting(self, backlog: bool = False) -> threading.Event:
        done = threading.Event()
        loop = self._loop
        if loop is None or loop.is_closed():
            self._listening = False  # not serving yet: _open will not start
            done.set()
            return done

        def close() -> None:
            self._close_listener(backlog)
            done.set()

        try:
            loop.call_soon_threadsafe(close)
        except RuntimeError:
            done.set()  # the loop closed meanwhile: so did the listener
        return done

    def _close_listener(self, backlog: bool) -> None:
        """On the loop: stop serving the listener and close its fd (``asyncio.Server.close``
        closes the socket it was given). With *backlog*, a ``dup()`` taken first keeps the
        listener open while what is queued is accepted (:func:`accept_backlog`) and served."""
        self._listening = False
        server = self._server
        if server is None or not server.is_serving():
            return
        keep = None
        if backlog:
            try:
                keep = self.sock.dup()
            except OSError:
                keep = None
        server.close()
        if keep is None:
            return
        loop = asyncio.get_running_loop()
        for sock in accept_backlog(keep):
            task = loop.create_task(self._connect(sock, self.ssl_context))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    # -- LoopWorker hooks ------------------------------------------------------------------
    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        state = self.state
        if self.config.limit_max_requests is not None:
            state.max_requests_reached = self._stop
        scheme = "https" if self.ssl_context is not None else "http"
        if not self._listening:
            self.sock.close()  # the stop began before this worker could serve
            return
        self._server = await loop.create_server(
            protocol_factory(state, loop, scheme),
            sock=self.sock,
            backlog=self.config.backlog,
            ssl=self.ssl_context,
            ssl_handshake_timeout=10.0 if self.ssl_context is not None else None,
        )
        if not self._listening:
            self._server.close()  # stop_accepting ran while the server was being made
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
            # Like a reload drain (every response closes its connection, idle ones get a
            # short grace for a request already on its way), without a hand-over.
            state.shutting_down = state.draining = True
            state.handoff = None
            for conn in list(state.connections):
                conn.start_draining()
        elif mode == FORCE:
            for conn in list(state.connections):
                conn.force_close()

    async def _close(self) -> None:
        """Wait (bounded by ``grace``) until no app request is in flight and every connection
        has closed. Idle keep-alive connections get a short grace to carry one more request
        (answered with ``Connection: close``), then close gracefully. The listener is closed
        first (for a stop the Supervisor had it closed already, see ``stop_accepting``; for a
        reload it keeps its own fd open, so queued connections wait for the new generation)."""
        state = self.state
        self._close_listener(backlog=False)
        # A connection accepted just before the listener closed is made (connection_made)
        # on the next iteration: let it register first, so it is drained (its request served)
        # rather than found after the drain and cut.
        await asyncio.sleep(0)
        await self._drain(lambda: not any(not t.done() for t in state.tasks)
                          and not state.connections and not self._connecting
                          and not self._adopted)
        self.forced_connections = len(state.connections) + self._end_adoption()
        for conn in list(state.connections):
            conn.force_close()
        await self._settle_tasks()
        # Nothing may outlive the loop (closing it with a live transport fails, EBUSY): one
        # more iteration lets pending connection_made/connection_lost callbacks run, then
        # whatever is still open is aborted.
        await asyncio.sleep(0)
        for conn in list(state.connections):
            conn.abort_now()

    def _teardown(self) -> None:
        self._end_adoption()  # also after a crash: no handed-over socket outlives the worker

    def _on_tick(self, now: float) -> None:
        """One timer per worker enforces every connection's idle and header deadlines."""
        for conn in list(self.state.connections):
            conn.check_timeouts(now)
