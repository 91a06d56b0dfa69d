"""SyncWorker: ``--threads`` blocking threads that serve WSGI apps (and ASGI apps under
``--execution sync``) on connections taken from an :class:`AcceptDistributor`.

Why blocking threads: WSGI apps block, and on a free-threaded interpreter plain threads running
the whole request (ASGI included, on a per-thread event loop) scale across cores without an event
loop in the middle. HTTP/1.1 parsing is the sans-IO :class:`H1Connection`; this module only moves
bytes between it and a blocking socket.

A thread serves one request, then hands the connection back to the distributor (idle keep-alive
connections never pin a thread). Control mirrors the async ``Worker``: ``start_draining()`` (reload:
in thread mode stop taking connections, the shared distributor keeps them; in process mode stop
accepting and close after in-flight requests), ``shutdown()`` (in-flight requests finish, new
ones get 503), ``force_stop()``; both drains are bounded by ``grace``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import h11

from devserve.asgi.cycle import Headers, HTTPCycle
from devserve.asgi.lifespan import Lifespan, LifespanFailed
from devserve.asgi.scope import apply_proxy_headers, http_scope, socket_address
from devserve.asgi.wsgi import WSGIInput, WSGIResponse, build_environ, run_wsgi
from devserve.config import Config
from devserve.lifecycle import LifecycleCollector, RequestCompleted, WorkerStats
from devserve.protocols.http1 import BadRequest, H1Connection, RequestHead
from devserve.serve.state import WorkerState, access_logger
from devserve.workers.accept_distributor import (
    AcceptDistributor,
    BlockingH1,
    BodyRejected,
    SyncConnection,
)
from devserve.workers.async_pool import AsyncPool

logger = logging.getLogger("devserve.error")

IO_TIMEOUT = 30.0  # a body read or a response write that makes no progress for this long fails
HANDSHAKE_TIMEOUT = 10.0
_RANK = {"running": 0, "draining": 1, "shutdown": 2, "force": 3}
_UNAVAILABLE = b"Service Unavailable\n"


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
        self._count_lock = threading.Lock()
        self._local = threading.local()

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
                    self._serve_connection(conn)
                except Exception:
                    logger.exception("unexpected error while serving a connection")
                    conn.close()
                finally:
                    self._busy[index] = None
        finally:
            loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
            if loop is not None:
                loop.close()

    # -- one connection --------------------------------------------------------------------
    def _serve_connection(self, conn: SyncConnection) -> None:
        if conn.needs_handshake and not self._handshake(conn):
            return
        if conn.h1 is None:
            config = self.config
            conn.h1 = H1Connection(
                max_incomplete_event_size=config.h11_max_incomplete_event_size,
                max_fields=config.limit_request_fields,
                max_body_size=config.limit_request_body,
            )
            try:
                conn.server = socket_address(conn.sock.getsockname())
                conn.client = socket_address(conn.sock.getpeername())
            except OSError:
                conn.close()
                return
        served = BlockingH1(conn)
        while True:
            if not self._serve_one(served):
                conn.close()
                return
            mode = self._mode
            if mode == "force":
                conn.close()
                return
            pipelined = bool(served.events) or conn.has_pending()
            if pipelined and (mode == "running" or self.owns_distributor):
                continue
            if served.events:
                conn.close()  # cannot carry parsed events across threads; never expected
                return
            self.distributor.release(conn)
            return

    def _handshake(self, conn: SyncConnection) -> bool:
        ctx = self.ssl_context
        if ctx is None:
            conn.needs_handshake = False
            return True
        try:
            conn.sock.settimeout(HANDSHAKE_TIMEOUT)
            tls = ctx.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
            conn.sock = tls
            tls.do_handshake()
        except (OSError, ValueError):
            conn.close()
            return False
        conn.needs_handshake = False
        return True

    def _serve_one(self, served: BlockingH1) -> bool:
        """Read one request head and answer it; True when the connection may be reused."""
        sock = served.sock
        try:
            sock.settimeout(self.config.timeout_request_header)
            event = served.next_event()
        except TimeoutError:
            if served.h1.request_in_progress:
                self._send_quietly(served, served.h1.error_response(408))
            return False
        except OSError:
            return False
        if isinstance(event, BadRequest):
            self._send_quietly(served, served.h1.error_response(event.status))
            return False
        if not isinstance(event, RequestHead):
            return False
        sock.settimeout(IO_TIMEOUT)
        served.body_done = False
        served.cycle = None
        served.close_after = False
        keep = self._handle(served, event)
        if not keep or served.disconnected or served.close_after:
            return False
        if not served.body_done and not served.discard_body():
            return False
        return served.h1.start_next_cycle()

    @staticmethod
    def _send_quietly(served: BlockingH1, data: bytes) -> None:
        try:
            served.sock.sendall(data)
        except OSError:
            pass

    def _handle(self, served: BlockingH1, head: RequestHead) -> bool:
        state = self.state
        started = time.perf_counter()
        mode = self._mode
        force_close = mode in ("shutdown", "force") or (
            mode == "draining" and self.owns_distributor)
        extra = state.default_headers()
        status = 0
        if mode in ("shutdown", "force"):
            status, keep = self._simple(served, 503, _UNAVAILABLE, extra, close=True)
        elif state.health_path is not None and head.target.split(b"?")[0] == \
                state.health_path.encode():
            status, keep = self._simple(served, 200, b"ok\n", extra, close=force_close)
        elif self.interface == "wsgi":
            status, keep = self._run_wsgi(served, head, extra, force_close)
        else:
            status, keep = self._run_asgi(served, head, extra, force_close)
        self._record(head, status, started, served.conn)
        return keep

    def _simple(self, served: BlockingH1, status: int, body: bytes, extra: Headers,
                close: bool) -> tuple[int, bool]:
        headers: Headers = [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *extra]
        if status == 503:
            headers.append((b"retry-after", b"1"))
        if close:
            headers.append((b"connection", b"close"))
        try:
            served.write_response(status, headers, body, True)
        except (OSError, h11.LocalProtocolError):
            return status, False
        return status, not close

    def _run_wsgi(self, served: BlockingH1, head: RequestHead, extra: Headers,
                  force_close: bool) -> tuple[int, bool]:
        conn = served.conn
        environ = build_environ(
            method=head.method, target=head.target, http_version=head.http_version,
            headers=head.headers, scheme="https" if self.ssl_context else "http",
            server=conn.server, client=conn.client, root_path=self.config.root_path,
            body=WSGIInput(served.pull_body), trusted=self.state.trusted,
            multiprocess=self.multiprocess, errors=sys.stderr,
        )
        response = WSGIResponse(served, extra_headers=extra, force_close=force_close,
                                is_head=head.method == b"HEAD")
        try:
            run_wsgi(self.app, environ, response)
        except Exception as exc:
            if served.disconnected:
                return response.status or 499, False
            if response.headers_sent:
                logger.error("Exception in WSGI application after the response started",
                             exc_info=exc)
                served.abort()
                return response.status, False
            if isinstance(exc, BodyRejected):
                self._send_quietly(served, served.h1.error_response(exc.status))
                return exc.status, False
            logger.error("Exception in WSGI application", exc_info=exc)
            return self._internal_error(served, extra, force_close)
        return response.status, not response.force_close

    def _internal_error(self, served: BlockingH1, extra: Headers, close: bool
                        ) -> tuple[int, bool]:
        try:
            return self._simple(served, 500, b"Internal Server Error\n", list(extra), close)
        except h11.LocalProtocolError:  # h11 refuses (an invalid head was attempted)
            self._send_quietly(served, served.h1.error_response(500))
            return 500, False

    def _run_asgi(self, served: BlockingH1, head: RequestHead, extra: Headers,
                  force_close: bool) -> tuple[int, bool]:
        conn = served.conn
        scope = http_scope(
            method=head.method, target=head.target,
            http_version=head.http_version.decode("ascii"), headers=head.headers,
            scheme="https" if self.ssl_context else "http", server=conn.server,
            client=conn.client, root_path=self.state.root_path,
            state=self.state.lifespan_state,
        )
        if self.state.trusted is not None:
            apply_proxy_headers(scope, self.state.trusted)
        cycle = HTTPCycle(scope, served, extra_headers=extra, force_close=force_close)
        served.cycle = cycle
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None:
            from devserve.workers.worker import new_event_loop

            loop = self._local.loop = new_event_loop(self.config.loop)
        try:
            loop.run_until_complete(cycle.run(self.app))
        except h11.LocalProtocolError as exc:
            logger.error("Invalid response from the ASGI application: %s", exc)
            served.abort()
            return 500, False
        keep = not (cycle.disconnected or served.disconnected or cycle.force_close)
        return cycle.status, keep and cycle.response_complete

    def _record(self, head: RequestHead, status: int, started: float,
                conn: SyncConnection) -> None:
        """Access log line and RequestCompleted event, like ``WorkerState.request_done``."""
        state = self.state
        with self._count_lock:
            state.total_requests += 1
            total = state.total_requests
        client = f"{conn.client[0]}:{conn.client[1]}" if conn.client else ""
        version = head.http_version.decode("ascii", "replace")
        target = head.target.decode("latin-1")
        if state.access_log:
            access_logger.info('%s - "%s %s HTTP/%s" %d', client, head.method.decode("latin-1"),
                               target, version, status)
        if state.collector is not None:
            state.collector.emit(RequestCompleted(
                slot=self.slot, generation=self.generation, method=head.method.decode("latin-1"),
                path=target.split("?", 1)[0], status=status,
                duration=time.perf_counter() - started, http_version=version, client=client))
        limit = state.limit_max_requests
        if limit is not None and total >= limit and not self.retired:
            self.retired = True  # --limit-max-requests: retire like a reload
            self._request("draining")
