"""One HTTP/2 stream's request/response exchange: the :class:`CycleOwner` of its HTTPCycle.

Split from :mod:`devserve.serve.h2` so the connection module keeps one job. A stream
holds the response bytes waiting for flow-control credit; the connection pumps them into h2.
An extended-CONNECT WebSocket (RFC 8441) uses a stream too, for its output only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from h2.errors import ErrorCodes
from h2.exceptions import H2Error

from devserve.asgi.cycle import Headers, HTTPCycle
from devserve.asgi.types import Message
from devserve.protocols.http2 import H2Server
from devserve.serve.flow import Waiters
from devserve.serve.state import WorkerState

logger = logging.getLogger("devserve.error")


class StreamHost(Protocol):
    """What a stream needs from its HTTP/2 connection (``H2Protocol``), so this module does not
    import the connection's."""

    @property
    def h2(self) -> H2Server: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def state(self) -> WorkerState: ...
    @property
    def client_str(self) -> str: ...
    @property
    def closing(self) -> bool: ...
    @property
    def write_paused(self) -> bool: ...

    def pump(self, stream: H2Stream) -> None:
        """Move the stream's pending response bytes into h2 as far as flow control allows."""

    def schedule_flush(self) -> None: ...

    def stream_finished(self, stream: H2Stream) -> None: ...

    def stream_gone(self, stream: H2Stream) -> None: ...


class StreamCycle(HTTPCycle):
    """HTTPCycle plus what only HTTP/2 needs: credit the client as the app consumes the body,
    and response trailers (``http.response.start`` with ``trailers: True``)."""

    __slots__ = ("stream",)
    stream: H2Stream

    async def receive(self) -> Message:
        message = await super().receive()
        self.stream.want_body()  # everything queued so far was just handed to the app
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.trailers":
            self.stream.add_trailers(message)
            return
        if kind == "http.response.start" and message.get("trailers"):
            self.stream.expect_trailers = True
        await super().send(message)


class H2Stream:
    """One request/response exchange; the :class:`CycleOwner` of its cycle."""

    __slots__ = ("body_done", "buf", "closed", "conn", "continue_sent", "cycle",
                 "expect_trailers", "expects_continue", "finished", "head_sent", "on_gone",
                 "received", "request_ended", "sid", "sized", "trailers", "unacked", "writers")

    def __init__(self, conn: StreamHost, sid: int, expects_continue: bool) -> None:
        self.conn = conn
        self.sid = sid
        self.cycle: StreamCycle | None = None
        self.buf = bytearray()  # response bytes waiting for flow-control credit
        self.body_done = False  # the app sent its last body message
        self.finished = False  # END_STREAM sent
        self.closed = False  # reset, or done in both directions: forget it
        self.head_sent = False
        self.sized = False  # the response declared a content-length
        self.request_ended = False
        self.expects_continue = expects_continue
        self.continue_sent = False
        self.expect_trailers = False
        self.trailers: Headers | None = None
        self.unacked = 0  # body bytes fed to the cycle, not yet credited to the client
        self.received = 0
        self.writers = Waiters()  # the app's send(), waiting for credit or the transport
        self.on_gone: Callable[[], None] | None = None  # told once when the stream is gone

    # -- CycleOwner ------------------------------------------------------------------------
    def write_response(self, status: int, headers: Headers, body: bytes, end: bool) -> None:
        if self.closed:
            return
        conn = self.conn
        end_now = end and not body and not self.expect_trailers
        try:
            conn.h2.send_head(self.sid, status, headers, end_now)
        except (ValueError, H2Error) as exc:
            logger.error("Invalid response head on HTTP/2 stream %d: %s", self.sid, exc)
            self.abort()
            return
        self.head_sent = True
        if end_now:
            self.body_done = self.finished = True
            conn.stream_finished(self)
        else:
            self.sized = any(n == b"content-length" for n, _ in headers)
            self._queue(body, end)
        conn.schedule_flush()

    def write_body(self, data: bytes, end: bool) -> None:
        if not self.closed:
            self._queue(data, end)
            self.conn.schedule_flush()

    async def wait_writable(self) -> None:
        conn = self.conn
        while not self.closed and (self.buf or conn.write_paused):
            await self.writers.wait()

    def want_body(self) -> None:
        if self.unacked and not self.closed:
            self.conn.h2.ack(self.sid, self.unacked)
            self.unacked = 0
            self.conn.schedule_flush()

    def send_continue(self) -> None:
        if self.expects_continue and not self.continue_sent and not self.head_sent:
            self.continue_sent = True
            if not self.closed:
                self.conn.h2.send_continue(self.sid)
                self.conn.schedule_flush()

    def abort(self) -> None:
        """Reset this stream only; the connection and its other streams carry on."""
        if not self.closed:
            self.conn.h2.reset(self.sid, ErrorCodes.INTERNAL_ERROR)
            self.conn.stream_gone(self)
            self.conn.schedule_flush()

    def cycle_done(self, cycle: HTTPCycle) -> None:
        self.conn.state.request_done(cycle, "2", self.conn.client_str)

    # -- response body and trailers --------------------------------------------------------
    def _queue(self, data: bytes, end: bool) -> None:
        if data:
            self.buf += data
        if end:
            self.body_done = True
        self.conn.pump(self)

    def add_trailers(self, message: Message) -> None:
        if not self.expect_trailers:
            logger.warning("ASGI: 'http.response.trailers' without 'trailers: True' ignored")
            return
        if self.trailers is None:
            self.trailers = []
        self.trailers.extend((bytes(n).lower(), bytes(v)) for n, v in message.get("headers", ()))
        if message.get("more_trailers", False):
            return
        if not self.body_done:
            raise RuntimeError("ASGI: trailers sent before the response body ended")
        self.expect_trailers = False
        if not self.trailers:
            self.trailers = None  # nothing to send: a plain END_STREAM
        self.conn.pump(self)
        self.conn.schedule_flush()

    def task_done(self, task: asyncio.Task[None]) -> None:
        """The app returned: end a response still waiting for trailers that never came."""
        if not self.closed and not self.finished and self.body_done:
            self.expect_trailers = False
            self.trailers = None
            self.conn.pump(self)
            self.conn.schedule_flush()

    def disconnect(self) -> None:
        self.closed = True
        self.buf.clear()
        if self.cycle is not None:
            self.cycle.mark_disconnected()
        on_gone, self.on_gone = self.on_gone, None
        if on_gone is not None:
            on_gone()
        self.wake()

    def wake(self) -> None:
        self.writers.wake()
