"""SyncWorker: ``--threads`` blocking threads that serve WSGI apps (and ASGI apps under
``--execution sync``) on connections taken from an :class:`AcceptDistributor`.

Why blocking threads: WSGI apps block, and on a free-threaded interpreter plain threads running
the whole request (ASGI included, on a per-thread event loop) scale across cores without an event
loop in the middle. Each connection is served by
:class:`SyncConnectionServer` (``devserve/serve/blocking_h1.py``); this module owns the threads.

A thread serves one request, then hands the connection back to the distributor (idle keep-alive
connections never pin a thread). Control mirrors the async ``Worker``: ``start_draining()`` (reload:
in thread mode stop taking connections, the shared distributor keeps them; in process mode stop
accepting and close after in-flight requests), ``shutdown()`` (in-flight requests finish, new
ones get 503), ``force_stop()``; both drains are bounded by ``grace``.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from devserve.asgi.lifespan import Lifespan, LifespanFailed
from devserve.config import Config
from devserve.lifecycle import LifecycleCollector, WorkerStats
from devserve.serve.blocking_conn import SyncConnection
from devserve.serve.blocking_h1 import SyncConnectionServer
from devserve.serve.state import WorkerState
from devserve.workers.accept_distributor import AcceptDistributor
from devserve.workers.async_pool import AsyncPool
from devserve.workers.worker import new_event_loop

logger = logging.getLogger("devserve.error")

_RANK = {"running": 0, "draining": 1, "shutdown": 2, "force": 3}


STATS_INTERVAL = 0.5  # seconds between WorkerStats gauges when a display listens


def queue_capacity(config: Config, workers: int) -> int:
    """``--accept-queue``, or enough for a few rounds of every thread."""
    if config.accept_queue is not None:
        return config.accept_queue
    return max(64, 4 * config.threads * workers)



class SyncWorker:
    """A worker slot made of ``config.threads`` blocking threads (meets ``TCPWorker``)."""

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
        self.config = config
        self.app = app
        self.distributor = distributor
        self.pool = pool
        self.interface = interface  # "wsgi" | "asgi"
        self.slot = slot
        self.generation = generation
        self.run_lifespan = run_lifespan
        self.ssl_context = ssl_context
        self.owns_distributor = owns_distributor
        self.multiprocess = multiprocess
        self.grace = config.timeout_graceful_shutdown
        self.state = WorkerState(config, app, slot=slot, generation=generation,
                                 collector=collector)
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self.startup_error: BaseException | None = None
        self.forced_connections = 0
        self.retired = False
        self.handoff: Callable[[socket.socket], None] | None = None  # unused: connections stay
        self._mode = "running"
        self._changed = threading.Event()
        self._busy: list[SyncConnection | None] = [None] * config.threads
        self.server = SyncConnectionServer(
            config, self.state, app, self, interface=interface, ssl_context=ssl_context,
            multiprocess=multiprocess, new_loop=lambda: new_event_loop(config.loop))

    @classmethod
    def standalone(cls, config: Config, app: Any, sock: socket.socket, *, interface: str,
                   slot: int, generation: int, collector: LifecycleCollector | None
                   ) -> SyncWorker:
        """A process worker: its own distributor on the inherited listener, its own pool."""
        from devserve.net.tls import create_ssl_context, tls_enabled

        ctx = create_ssl_context(config, announce=False) if tls_enabled(config) else None
        if ctx is not None:
            ctx.set_alpn_protocols(["http/1.1"])
        distributor = AcceptDistributor(
            sock, capacity=queue_capacity(config, 1), keep_alive_timeout=config.timeout_keep_alive,
            tls=ctx is not None, name=f"devserve-accept-w{slot}")
        return cls(config, app, distributor, AsyncPool(1, loop_setting=config.loop),
                   interface=interface, slot=slot, generation=generation, collector=collector,
                   ssl_context=ctx, owns_distributor=True, multiprocess=config.workers > 1)

    # -- TCPWorker -------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            if self.startup_error is None and not self.ready.is_set():
                self.startup_error = exc
            raise
        finally:
            self.ready.set()
            if self.owns_distributor:
                self.distributor.close()
                self.pool.close()
            self.stopped.set()

    def set_lifespan_state(self, state: dict[str, Any]) -> None:
        self.state.lifespan_state = state

    def start_draining(self) -> None:
        self._request("draining")

    def is_idle(self) -> bool:
        return not any(self._busy)

    # -- more control ----------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop: in-flight requests finish within ``grace``; new requests get 503."""
        self._request("shutdown")

    def force_stop(self) -> None:
        """Close every connection a thread is serving now (after a grace ran out)."""
        self._request("force")
        for conn in list(self._busy):
            if conn is not None:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def adopt(self, sock: socket.socket) -> None:
        """An idle connection handed over by a draining generation: park it."""
        self.distributor.adopt(sock)

    # -- SyncOwner (what the connection server asks of its worker) -------------------------
    @property
    def mode(self) -> str:
        return self._mode

    def release(self, conn: SyncConnection) -> None:
        self.distributor.release(conn)

    def retire(self) -> None:
        if not self.retired:
            self.retired = True  # --limit-max-requests: retire like a reload
            self._request("draining")

    @property
    def in_flight(self) -> int:
        return sum(1 for c in self._busy if c is not None)

    def _request(self, mode: str) -> None:
        if _RANK[mode] <= _RANK[self._mode]:
            return  # modes only escalate: running < draining < shutdown < force
        self._mode = mode
        if mode == "draining":
            self.state.draining = True
            if self.owns_distributor:
                self.distributor.start_draining()
        elif mode == "shutdown":
            self.state.shutting_down = True
            self.distributor.start_shutdown()
        self._changed.set()

    # -- lifecycle -------------------------------------------------------------------------
    def _run(self) -> None:
        config = self.config
        lifespan: Lifespan | None = None
        if self.interface == "asgi" and self.run_lifespan and config.lifespan != "off":
            lifespan = Lifespan(self.app, config.lifespan)
            try:
                self.pool.run(lifespan.startup())
            except LifespanFailed as exc:
                self.startup_error = exc
                return
            if lifespan.supported:
                self.state.lifespan_state = lifespan.state
        if self.owns_distributor:
            self.distributor.start()
        threads = [
            threading.Thread(target=self._thread_main, args=(i,), daemon=True,
                             name=f"{threading.current_thread().name}-t{i}")
            for i in range(config.threads)
        ]
        for thread in threads:
            thread.start()
        self.ready.set()
        if self._mode != "running":
            self._changed.set()
        last: tuple[int, int, int] | None = None
        while not self._changed.wait(STATS_INTERVAL):
            if self.state.collector is not None:
                last = self._emit_stats(last)
        deadline = time.monotonic() + self.grace
        for thread in threads:
            while thread.is_alive() and self._mode != "force" and time.monotonic() < deadline:
                thread.join(0.05)
        if any(t.is_alive() for t in threads):
            self.forced_connections = self.in_flight
            self.force_stop()
            for thread in threads:
                thread.join(1.0)
        if lifespan is not None:
            try:
                self.pool.run(lifespan.shutdown(timeout=self.grace), self.grace + 1.0)
            except Exception:
                logger.exception("lifespan shutdown failed")

    def _emit_stats(self, last: tuple[int, int, int] | None) -> tuple[int, int, int]:
        """The dashboard's gauges (connections served or parked, in flight, served), sent
        only when they changed."""
        in_flight = self.in_flight
        stats = (in_flight + self.distributor.idle_count, in_flight, self.state.total_requests)
        if stats != last and self.state.collector is not None:
            self.state.collector.emit(WorkerStats(
                slot=self.slot, generation=self.generation, connections=stats[0],
                in_flight=stats[1], requests=stats[2]))
        return stats

    def _thread_main(self, index: int) -> None:
        distributor = self.distributor
        try:
            while True:
                mode = self._mode
                if mode == "force" or (mode == "draining" and not self.owns_distributor):
                    return
                conn = distributor.get(0.25 if mode == "running" else 0.05)
                if conn is None:
                    if mode != "running" and distributor.quiet():
                        return
                    continue
                if self._mode == "draining" and not self.owns_distributor:
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
