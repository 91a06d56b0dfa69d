"""SyncWorker: ``--threads`` blocking threads that serve WSGI apps (and ASGI apps under
``--execution sync``) on connections taken from an :class:`AcceptDistributor`.

Why blocking threads: WSGI apps block, and on a free-threaded interpreter plain threads running
the whole request (ASGI included, on a per-thread event loop) scale across cores without an event
loop in the middle. Each connection is served by
:class:`SyncConnectionServer` (``devserve/serve/blocking_h1.py``); this module owns the threads.

A thread serves one request, then hands the connection back to the distributor (idle keep-alive
connections never pin a thread). Control mirrors the async ``Worker``: ``start_draining()`` (reload:
in thread mode stop taking connections, the shared distributor keeps them; in process mode stop
accepting and close after in-flight requests), ``stop_accepting()`` (the distributor closes its
listener fd, see there) and ``shutdown()`` (in-flight requests finish, what still arrives on open
connections is answered with ``Connection: close``), ``force_stop()``; both drains are bounded
by ``grace``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from devserve.config import Config
from devserve.lifecycle import LifecycleCollector
from devserve.net.tls import create_ssl_context, tls_enabled
from devserve.serve.blocking_conn import SyncConnection
from devserve.serve.blocking_h1 import SyncConnectionServer
from devserve.serve.state import WorkerState
from devserve.workers.accept_distributor import AcceptDistributor
from devserve.workers.async_pool import AsyncPool
from devserve.workers.base import DRAINING, FORCE, RUNNING, SHUTDOWN, LoopWorker
from devserve.workers.loop import new_event_loop

logger = logging.getLogger("devserve.error")

T = TypeVar("T")


def queue_capacity(config: Config, workers: int) -> int:
    """``--accept-queue``, or enough for a few rounds of every thread."""
    if config.accept_queue is not None:
        return config.accept_queue
    return max(64, 4 * config.threads * workers)


class SyncWorker(LoopWorker):
    """A worker slot made of ``config.threads`` blocking threads (meets ``TCPWorker``). Its
    own loop only runs the lifecycle (modes, gauges, the drain); the ASGI lifespan runs on the
    :class:`AsyncPool`, whose loop outlives any one request."""

    def __init__(
        self,
        config: Config,
        app: Any,
        distributor: AcceptDistributor,
        pool: AsyncPool,
        *,
        interface: str = "wsgi",
        slot: int = 0,
        generation: int = 0,
        collector: LifecycleCollector | None = None,
        run_lifespan: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        owns_distributor: bool = False,
        multiprocess: bool = False,
    ) -> None:
        super().__init__(
            config,
            WorkerState(config, app, slot=slot, generation=generation, collector=collector),
            run_lifespan=run_lifespan and interface == "asgi",  # WSGI has no lifespan
        )
        self.distributor = distributor
        self.pool = pool
        self.owns_distributor = owns_distributor  # process mode: draining closes, not hands on
        self._busy: list[SyncConnection | None] = [None] * config.threads
        self._threads: list[threading.Thread] = []
        self.server = SyncConnectionServer(
            config, self.state, app, self, interface=interface, ssl_context=ssl_context,
            multiprocess=multiprocess, new_loop=lambda: new_event_loop(config.loop))

    @classmethod
    def standalone(cls, config: Config, app: Any, sock: socket.socket, *, interface: str,
                   slot: int, generation: int, collector: LifecycleCollector | None
                   ) -> SyncWorker:
        """A process worker: its own distributor on the inherited listener, its own pool."""
        ctx = create_ssl_context(config, announce=False) if tls_enabled(config) else None
        if ctx is not None:
            ctx.set_alpn_protocols(["http/1.1"])
        distributor = AcceptDistributor(
            sock, capacity=queue_capacity(config, 1), keep_alive_timeout=config.timeout_keep_alive,
            tls=ctx is not None, name=f"devserve-accept-w{slot}")
        return cls(config, app, distributor, AsyncPool(1, loop_setting=config.loop),
                   interface=interface, slot=slot, generation=generation, collector=collector,
                   ssl_context=ctx, owns_distributor=True, multiprocess=config.workers > 1)

    def adopt(self, sock: socket.socket) -> None:
        """An idle connection handed over by a draining generation: park it."""
        self.distributor.adopt(sock)

    def release(self, conn: SyncConnection) -> None:
        """SyncOwner: an idle keep-alive connection goes back to the distributor."""
        self.distributor.release(conn)

    def close_gracefully(self, conn: SyncConnection) -> None:
        """SyncOwner: a finished connection lingers in the distributor until the client's EOF."""
        self.distributor.close_gracefully(conn)

    def stop_accepting(self, backlog: bool = False) -> threading.Event:
        """The listener fd is the distributor's. In thread mode one distributor serves every
        SyncWorker, so only the one asked to take the *backlog* (the last) closes it."""
        if self.owns_distributor or backlog:
            return self.distributor.stop_accepting(backlog)
        return super().stop_accepting(backlog)

    @property
    def in_flight(self) -> int:
        return sum(1 for c in self._busy if c is not None)

    # -- LoopWorker hooks ------------------------------------------------------------------
    async def _on_app_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(self.pool.submit(coro))

    async def _open(self) -> None:
        if self.owns_distributor:
            self.distributor.start()
        name = threading.current_thread().name
        self._threads = [
            threading.Thread(target=self._thread_main, args=(i,), daemon=True,
                             name=f"{name}-t{i}")
            for i in range(self.config.threads)
        ]
        for thread in self._threads:
            thread.start()

    def _on_mode(self, mode: str) -> None:
        if mode == DRAINING:
            self.state.draining = True
            if self.owns_distributor:
                self.distributor.start_draining()
            else:
                self.distributor.queue.wake_all()  # the next generation serves the queue now
        elif mode == SHUTDOWN:
            # Parked connections get the drain grace for one more request (answered with
            # Connection: close), then close gracefully; the threads serve until it is quiet.
            self.state.shutting_down = self.state.draining = True
            self.distributor.start_draining()
        elif mode == FORCE:
            for conn in list(self._busy):  # unblock the threads serving them
                if conn is not None:
                    try:
                        conn.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    async def _close(self) -> None:
        def finished() -> bool:
            return not any(t.is_alive() for t in self._threads)

        if not await self._drain(finished):
            self.forced_connections = self.in_flight
            self.force_stop()
            await self._wait_until(finished, 1.0, until_force=False)

    def _gauges(self) -> tuple[int, int, int]:
        """Connections served or parked, in flight, served."""
        in_flight = self.in_flight
        return in_flight + self.distributor.idle_count, in_flight, self.state.total_requests

    def _teardown(self) -> None:
        if self.owns_distributor:
            self.distributor.close()
            self.pool.close()

    # -- the serving threads ---------------------------------------------------------------
    def _thread_main(self, index: int) -> None:
        distributor = self.distributor
        try:
            while True:
                mode = self._mode
                if mode == FORCE or (mode == DRAINING and not self.owns_distributor):
                    return
                conn = distributor.get(0.25 if mode == RUNNING else 0.05)
                if conn is None:
                    if mode != RUNNING and distributor.quiet():
                        return
                    continue
                if self._mode == DRAINING and not self.owns_distributor:
                    distributor.queue.put(conn)  # the next generation takes it
                    return
                self._busy[index] = conn
                try:
                    self.server.serve(conn)
                except Exception:
                    logger.exception("unexpected error while serving a connection")
                    conn.close()
                finally:
                    self._busy[index] = None
        finally:
            self.server.close_thread_loop()
