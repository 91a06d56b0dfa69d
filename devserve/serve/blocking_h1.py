"""The blocking HTTP/1.1 path: one thread serves one connection's requests on a plain socket.

Why here (and not in ``workers/``): this is a connection driver like ``h1.py``, only blocking.
``SyncWorker`` owns the threads and their lifecycle (run, drain, stats); it hands each
connection taken from its ``AcceptDistributor`` to :class:`SyncConnectionServer`, which
reads requests with the sans-IO :class:`H1Connection`, runs the WSGI or ASGI app and writes the
answer. :class:`SyncConnection` is what travels between the distributor and the threads
(parser state included, so bytes already buffered survive the trip); :class:`BlockingH1` is
one thread's blocking I/O on it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import h11

from devserve.asgi.cycle import HTTPCycle
from devserve.asgi.scope import apply_proxy_headers, http_scope, socket_address
from devserve.asgi.wsgi import ClientGone, Headers, WSGIInput, WSGIResponse, build_environ, run_wsgi
from devserve.config import Config
from devserve.lifecycle import RequestCompleted
from devserve.protocols.http1 import (
    BadRequest,
    BodyChunk,
    H1Connection,
    H1Event,
    RequestEnd,
    RequestHead,
)
from devserve.serve.state import WorkerState, access_logger

logger = logging.getLogger("devserve.error")

IO_TIMEOUT = 30.0  # a body read or a response write that makes no progress for this long fails
HANDSHAKE_TIMEOUT = 10.0
DISCARD_BODY_LIMIT = 1024 * 1024  # unread request body skipped to keep a connection alive
_UNAVAILABLE = b"Service Unavailable\n"


class SyncConnection:
    """An accepted connection and its HTTP/1.1 state, passed between the distributor and the
    SyncWorker threads (so bytes already buffered survive the trip)."""

    __slots__ = ("client", "h1", "idle_deadline", "needs_handshake", "server", "sock")

    def __init__(self, sock: socket.socket, *, needs_handshake: bool = False) -> None:
        self.sock: socket.socket = sock
        self.h1: H1Connection | None = None  # created by the first worker that serves it
        self.needs_handshake = needs_handshake
        self.idle_deadline = 0.0
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None

    def has_pending(self) -> bool:
        """Bytes that a selector cannot see: unparsed input or TLS-decrypted data."""
        if self.h1 is not None and self.h1.has_buffered_bytes:
            return True
        sock = self.sock
        return isinstance(sock, ssl.SSLSocket) and not self.needs_handshake and (
            sock.pending() > 0)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass



class BodyRejected(OSError):
    """The request body broke a limit (413) or the protocol (400) while the app read it."""

    def __init__(self, status: int) -> None:
        super().__init__(f"request body rejected with {status}")
        self.status = status


class BlockingH1:
    """One connection on one thread: reads events, pulls the body, writes the response.

    It is both the WSGI ``ResponseSink`` and the ASGI cycle's owner (``CycleOwner``).
    """

    def __init__(self, conn: SyncConnection) -> None:
        assert conn.h1 is not None
        self.conn = conn
        self.sock = conn.sock
        self.h1: H1Connection = conn.h1
        self.events: collections.deque[H1Event] = collections.deque()
        self.body_done = False
        self.disconnected = False
        self.close_after = False
        self.cycle: HTTPCycle | None = None

    def next_event(self) -> H1Event:
        while not self.events:
            self.events.extend(self.h1.next_events())
            if not self.events:
                self.h1.feed(self.sock.recv(65536))
        return self.events.popleft()

    def pull_body(self) -> bytes:
        """The next chunk of the request body; ``b""`` at its end."""
        if self.body_done:
            return b""
        self.send_continue()
        event = self.next_event()
        if isinstance(event, BodyChunk):
            return event.data
        if isinstance(event, RequestEnd):
            self.body_done = True
            return b""
        if isinstance(event, BadRequest):
            self.body_done = True
            raise BodyRejected(event.status)
        self.disconnected = True
        raise ClientGone("the client closed the connection")

    def discard_body(self) -> bool:
        """Skip what the app left unread; False when there is too much (close instead)."""
        left = DISCARD_BODY_LIMIT
        try:
            while left >= 0 and (chunk := self.pull_body()):
                left -= len(chunk)
        except OSError:
            return False
        return left >= 0

    def _send(self, data: bytes) -> None:
        if self.disconnected:
            raise ClientGone("the client closed the connection")
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.disconnected = True
            if self.cycle is not None:
                self.cycle.mark_disconnected()
            raise ClientGone(str(exc)) from None

    # -- ResponseSink / CycleOwner ---------------------------------------------------------
    def write_response(self, status: int, headers: Headers, body: bytes, end: bool) -> None:
        if self.h1.waiting_for_continue and all(n != b"connection" for n, _ in headers):
            headers.append((b"connection", b"close"))  # the body may never come
        if any(n == b"connection" and b"close" in v.lower() for n, v in headers):
            self.close_after = True  # don't wait for an unread body: we close anyway
        data = self.h1.response_head(status, headers)
        if body:
            data += self.h1.body(body)
        if end:
            data += self.h1.end()
        self._send(data)

    def write_body(self, data: bytes, end: bool) -> None:
        out = self.h1.body(data)
        if end:
            out += self.h1.end()
        if out:
            self._send(out)

    async def wait_writable(self) -> None:
        return None  # sendall() already waited

    def want_body(self) -> None:
        cycle = self.cycle
        assert cycle is not None
        try:
            data = self.pull_body()
        except OSError:
            cycle.mark_disconnected()
            return
        if data:
            cycle.feed_body(data)
        else:
            cycle.end_body()

    def send_continue(self) -> None:
        if self.h1.waiting_for_continue and not self.disconnected:
            self._send(self.h1.continue_100())

    def abort(self) -> None:
        self.disconnected = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def cycle_done(self, cycle: HTTPCycle) -> None:
        return None  # the server logs after the cycle's task returned


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
                conn.close()
                return
            mode = owner.mode
            if mode == "force":
                conn.close()
                return
            pipelined = bool(served.events) or conn.has_pending()
            if pipelined and (mode == "running" or owner.owns_distributor):
                continue
            if served.events:
                conn.close()  # cannot carry parsed events across threads; never expected
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
        mode = self.owner.mode
        force_close = mode in ("shutdown", "force") or (
            mode == "draining" and self.owner.owns_distributor)
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
