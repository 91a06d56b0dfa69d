"""One blocking HTTP/1.1 connection: what travels between the accept distributor and the
worker threads (:class:`SyncConnection`, parser state included, so bytes already buffered
survive the trip), and one thread's blocking I/O on it (:class:`BlockingH1`: read events, pull
the body, write the response — the WSGI ``ResponseSink`` and the ASGI cycle's ``CycleOwner``).

What to answer is decided in ``blocking_h1.py``; this module only moves bytes.
"""

from __future__ import annotations

import collections
import socket
import ssl
from typing import TYPE_CHECKING

from devserve.asgi.wsgi import ClientGone, Headers
from devserve.protocols.http1 import BadRequest, BodyChunk, H1Connection, H1Event, RequestEnd

if TYPE_CHECKING:
    from devserve.asgi.cycle import HTTPCycle

DISCARD_BODY_LIMIT = 1024 * 1024  # unread request body skipped to keep a connection alive


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
