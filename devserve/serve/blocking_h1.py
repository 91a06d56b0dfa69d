"""The blocking HTTP/1.1 path: one thread serves one connection's requests on a plain socket.

Why here (and not in ``workers/``): this is a connection driver like ``h1.py``, only blocking.
``SyncWorker`` owns the threads and their lifecycle (run, drain, stats); it hands each
connection taken from its ``AcceptDistributor`` to :class:`SyncConnectionServer`, which
reads requests with the sans-IO :class:`H1Connection` (through :class:`BlockingH1`, in
``blocking_conn.py``), admits them like every other driver (``admission.py``), runs the WSGI or
ASGI app and writes the answer.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import h11

from devserve.asgi.cycle import HTTPCycle
from devserve.asgi.scope import apply_proxy_headers, http_scope, socket_address
from devserve.asgi.wsgi import Headers, WSGIInput, WSGIResponse, build_environ, run_wsgi
from devserve.config import Config
from devserve.lifecycle import RequestCompleted
from devserve.protocols.http1 import BadRequest, H1Connection, RequestHead
from devserve.serve.admission import Verdict, admit, request_path
from devserve.serve.blocking_conn import BlockingH1, BodyRejected, SyncConnection
from devserve.serve.responses import CLOSE, INTERNAL_ERROR, Canned, for_verdict
from devserve.serve.state import WorkerState, access_logger

logger = logging.getLogger("devserve.error")

IO_TIMEOUT = 30.0  # a body read or a response write that makes no progress for this long fails
HANDSHAKE_TIMEOUT = 10.0


class SyncOwner(Protocol):
    """What :class:`SyncConnectionServer` needs from the worker whose threads run it."""

    @property
    def mode(self) -> str:
        """``running`` < ``draining`` < ``shutdown`` < ``force`` (modes only escalate)."""

    @property
    def owns_distributor(self) -> bool:
        """True in process mode: draining closes connections instead of handing them on."""

    def release(self, conn: SyncConnection) -> None:
        """Park an idle keep-alive connection until the client sends again."""

    def close_gracefully(self, conn: SyncConnection) -> None:
        """Close *conn* without a reset: FIN, then read and discard until the client's EOF
        (unread request bytes at ``close()`` would make the kernel send an RST, which can
        destroy the response still on its way)."""

    def retire(self) -> None:
        """``--limit-max-requests`` was reached: drain like a reload."""


class SyncConnectionServer:
    """Serves the requests of one connection at a time on the calling thread.

    One instance per worker, shared by its threads: per-thread state (the ASGI event loop)
    lives in a ``threading.local``, the request counter behind a lock.
    """

    def __init__(
        self,
        config: Config,
        state: WorkerState,
        app: Any,
        owner: SyncOwner,
        *,
        interface: str,
        ssl_context: ssl.SSLContext | None,
        multiprocess: bool,
        new_loop: Callable[[], asyncio.AbstractEventLoop],
    ) -> None:
        self.config = config
        self.state = state
        self.app = app
        self.owner = owner
        self.interface = interface  # "wsgi" | "asgi"
        self.ssl_context = ssl_context
        self.multiprocess = multiprocess
        self._new_loop = new_loop
        self._count_lock = threading.Lock()
        self._in_flight = 0  # requests being answered by this worker's threads
        self._local = threading.local()

    def close_thread_loop(self) -> None:
        """Close the calling thread's ASGI event loop, if it made one (thread exit)."""
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is not None:
            self._local.loop = None
            loop.close()

    def serve(self, conn: SyncConnection) -> None:
        """Answer the requests waiting on *conn*, then close it or give it back to the owner."""
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
        owner = self.owner
        while True:
            if not self._serve_one(served):
                owner.close_gracefully(conn)
                return
            mode = owner.mode
            if mode == "force":
                conn.close()
                return
            pipelined = bool(served.events) or conn.has_pending()
            if pipelined and (mode == "running" or owner.owns_distributor):
                continue
            if served.events:
                owner.close_gracefully(conn)  # parsed events cannot cross threads; not expected
                return
            owner.release(conn)
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
        owner = self.owner
        mode = owner.mode
        stopping = mode in ("shutdown", "force")
        force_close = stopping or (mode == "draining" and owner.owns_distributor)
        extra = state.default_headers()
        limits = state.limits
        # The path only matters to the health check: skip decoding it when there is none.
        path = request_path(head.target, state.root_path) if limits.health_path else ""
        with self._count_lock:
            in_flight = self._in_flight
            self._in_flight += 1
        try:
            verdict = admit(limits, path, head.headers,
                            unhealthy=mode != "running" or not state.healthy,
                            in_flight=in_flight)
            if verdict is not Verdict.APP:
                status, keep = self._canned(served, for_verdict(verdict), extra,
                                            force_close or verdict.refused)
            elif self.interface == "wsgi":
                status, keep = self._run_wsgi(served, head, extra, force_close)
            else:
                status, keep = self._run_asgi(served, head, extra, force_close)
        finally:
            with self._count_lock:
                self._in_flight -= 1
        self._record(head, status, started, served.conn)
        return keep

    @staticmethod
    def _canned(served: BlockingH1, canned: Canned, extra: Headers, close: bool
                ) -> tuple[int, bool]:
        """Write one of the server's own responses; False when the connection must close."""
        headers = [*canned.headers(), *extra]
        if close:
            headers.append(CLOSE)
        try:
            served.write_response(canned.status, headers, canned.body, True)
        except h11.LocalProtocolError:  # h11 refuses (e.g. an invalid head was attempted)
            if not served.disconnected:
                SyncConnectionServer._send_quietly(served, served.h1.error_response(canned.status))
            return canned.status, False
        except OSError:
            return canned.status, False
        return canned.status, not close

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
            return self._canned(served, INTERNAL_ERROR, extra, force_close)
        return response.status, not response.force_close

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
            loop = self._local.loop = self._new_loop()
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
                slot=state.slot, generation=state.generation,
                method=head.method.decode("latin-1"), path=target.split("?", 1)[0],
                status=status, duration=time.perf_counter() - started, http_version=version,
                client=client))
        limit = state.limit_max_requests
        if limit is not None and total >= limit:
            self.owner.retire()  # --limit-max-requests: retire like a reload
