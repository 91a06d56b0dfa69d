"""asyncio glue for one HTTP/3 (QUIC) connection: runs one :class:`HTTPCycle` per request
stream, each stream being its cycle's :class:`CycleOwner`, and drives the connection's single
loop timer from ``get_timer()``/``handle_timer()``.

- Every new request stream takes the app from the worker's :class:`AppRef` *when it opens*: in
  thread mode the Supervisor swaps that on promotion, so after a reload new streams run the new
  code while streams already running finish on the old one, on the same QUIC connection.
- Backpressure: a stream whose body queue passes ``HIGH_WATER`` stops getting flow-control
  credit until the app reads (see ``pause_stream``); ``send()`` waits while more than
  ``SEND_HIGH_WATER`` response bytes of the stream are unacknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from aioquic.h3.connection import ErrorCode

from devserve.asgi.cycle import Headers, HTTPCycle
from devserve.asgi.scope import apply_proxy_headers, http_scope
from devserve.asgi.types import ASGIApp
from devserve.protocols.http3 import (
    BodyData,
    ConnectionEnded,
    H3Endpoint,
    H3Event,
    H3ServerConnection,
    RequestOpened,
    StreamReset,
)
from devserve.serve.admission import body_over_limit
from devserve.serve.flow import Waiters
from devserve.serve.responses import TOO_LARGE
from devserve.serve.state import WorkerState

logger = logging.getLogger("devserve.error")

SEND_HIGH_WATER = 256 * 1024


class AppRef:
    """The app (and its lifespan state) that new request streams are served by."""

    __slots__ = ("app", "generation", "lifespan_state")

    def __init__(self, app: ASGIApp, generation: int = 1,
                 lifespan_state: dict[str, Any] | None = None) -> None:
        self.app = app
        self.generation = generation
        self.lifespan_state = lifespan_state


class H3Owner(Protocol):
    """What an :class:`H3Conn` needs from the worker that owns the UDP socket (``H3Worker``),
    so this module never imports the workers package."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def state(self) -> WorkerState: ...
    @property
    def app_ref(self) -> AppRef:
        """The app new request streams are served by (swapped on a thread-mode reload)."""
    @property
    def server(self) -> tuple[str, int]: ...
    @property
    def closing(self) -> bool:
        """Stopping (drain or shutdown): new streams are refused."""
    @property
    def endpoint(self) -> H3Endpoint: ...

    def send_datagrams(self, datagrams: list[tuple[bytes, Any]]) -> None: ...

    def connection_ended(self, conn: H3Conn) -> None: ...


class H3Stream:
    """One request/response exchange on a QUIC bidirectional stream."""

    __slots__ = ("closed", "conn", "cycle", "finished", "paused", "received", "request_ended",
                 "sid", "writers")

    def __init__(self, conn: H3Conn, sid: int) -> None:
        self.conn = conn
        self.sid = sid
        self.cycle: HTTPCycle | None = None
        self.finished = False  # the response ended (FIN sent)
        self.closed = False
        self.request_ended = False
        self.paused = False
        self.received = 0
        self.writers = Waiters()  # the app's send(), waiting for acknowledgements

    # -- CycleOwner ------------------------------------------------------------------------
    def write_response(self, status: int, headers: Headers, body: bytes, end: bool) -> None:
        if self.closed:
            return
        proto = self.conn.proto
        try:
            proto.send_head(self.sid, status, headers, end and not body)
            if body:
                proto.send_data(self.sid, body, end)
        except Exception as exc:  # invalid header names/values, stream already gone
            logger.error("Cannot send the response on HTTP/3 stream %d: %s", self.sid, exc)
            self.abort()
            return
        if end:
            self._finished()
        self.conn.schedule_flush()

    def write_body(self, data: bytes, end: bool) -> None:
        if self.closed:
            return
        try:
            self.conn.proto.send_data(self.sid, data, end)
        except Exception as exc:
            logger.error("Cannot send on HTTP/3 stream %d: %s", self.sid, exc)
            self.abort()
            return
        if end:
            self._finished()
        self.conn.schedule_flush()

    async def wait_writable(self) -> None:
        conn = self.conn
        while not self.closed and conn.proto.send_backlog(self.sid) > SEND_HIGH_WATER:
            await self.writers.wait()

    def want_body(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.conn.proto.resume_stream(self.sid)
            self.conn.schedule_flush()

    def send_continue(self) -> None:
        """HTTP/3 clients do not wait for ``100 Continue`` in practice; nothing to send."""

    def abort(self) -> None:
        if not self.closed:
            self.conn.proto.reset(self.sid, ErrorCode.H3_INTERNAL_ERROR)
            self.conn.stream_gone(self)
            self.conn.schedule_flush()

    def cycle_done(self, cycle: HTTPCycle) -> None:
        self.conn.worker.state.request_done(cycle, "3", self.conn.client_str)

    # -- helpers ---------------------------------------------------------------------------
    def pause(self) -> None:
        if not self.closed:
            self.paused = True
            self.conn.proto.pause_stream(self.sid)

    def _finished(self) -> None:
        self.finished = True
        if not self.request_ended:
            self.conn.proto.stop_reading(self.sid)  # nobody will read the rest of the body
        self.conn.stream_gone(self)

    def disconnect(self) -> None:
        self.closed = True
        if self.cycle is not None:
            self.cycle.mark_disconnected()
        self.wake()

    def wake(self) -> None:
        self.writers.wake()


class H3Conn:
    """Drives one :class:`H3ServerConnection`: events → cycles, datagrams → the transport."""

    def __init__(self, worker: H3Owner, proto: H3ServerConnection,
                 addr: tuple[Any, ...]) -> None:
        self.worker = worker
        self.loop = worker.loop
        self.proto = proto
        self.client = (str(addr[0]), int(addr[1]))
        self.client_str = f"{addr[0]}:{addr[1]}"
        self.streams: dict[int, H3Stream] = {}
        self.ended = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_pending = False

    # -- input -----------------------------------------------------------------------------
    def handle(self, events: list[H3Event]) -> None:
        for event in events:
            if isinstance(event, BodyData):
                self._on_body(event)
            elif isinstance(event, RequestOpened):
                self._open_stream(event)
            elif isinstance(event, StreamReset):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    if not stream.finished:
                        self.proto.reset(stream.sid, ErrorCode.H3_REQUEST_CANCELLED)
                        self.schedule_flush()
                    self.stream_gone(stream)
            elif isinstance(event, ConnectionEnded):
                self._ended()
        for stream in list(self.streams.values()):
            stream.wake()  # acknowledgements may have made room: re-check the backlog

    def _open_stream(self, event: RequestOpened) -> None:
        worker = self.worker
        state = worker.state
        sid = event.stream_id
        proto = self.proto
        if proto.goaway_id is not None and sid >= proto.goaway_id:
            proto.reset(sid, ErrorCode.H3_REQUEST_REJECTED)
            return
        ref = worker.app_ref
        try:
            scope = http_scope(
                method=event.method, target=event.target, http_version="3",
                headers=event.headers, scheme="https", server=worker.server, client=self.client,
                root_path=state.root_path, state=ref.lifespan_state,
            )
        except (UnicodeDecodeError, ValueError):
            proto.reset(sid, ErrorCode.H3_MESSAGE_ERROR)
            return
        if state.trusted is not None:
            apply_proxy_headers(scope, state.trusted)
        stream = H3Stream(self, sid)
        cycle = HTTPCycle(scope, stream, extra_headers=state.default_headers(),
                          on_pause_reading=stream.pause)
        stream.cycle = cycle
        self.streams[sid] = stream
        if event.end_stream:
            stream.request_ended = True
            cycle.end_body()
        # The endpoint already refuses connections beyond --limit-concurrency: count streams.
        verdict = state.admit(scope["path"], event.headers, closing=worker.closing)
        state.start_cycle(self.loop, cycle, verdict, ref.app)

    def _on_body(self, event: BodyData) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None or stream.cycle is None:
            return
        cycle = stream.cycle
        stream.received += len(event.data)
        if body_over_limit(self.worker.state.limits, stream.received):
            cycle.mark_disconnected()
            if cycle.response_started:
                stream.abort()
            else:
                stream.write_response(TOO_LARGE.status, TOO_LARGE.headers(), TOO_LARGE.body,
                                      True)
            return
        if event.data:
            cycle.feed_body(event.data)
        if event.end_stream:
            stream.request_ended = True
            cycle.end_body()

    def stream_gone(self, stream: H3Stream) -> None:
        stream.disconnect()
        self.streams.pop(stream.sid, None)
        self.proto.resume_stream(stream.sid)

    def _ended(self) -> None:
        if self.ended:
            return
        self.ended = True
        for stream in list(self.streams.values()):
            stream.disconnect()
        self.streams.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.worker.connection_ended(self)

    # -- output and the timer --------------------------------------------------------------
    def schedule_flush(self) -> None:
        """Coalesce the frames every stream wrote in this loop iteration into one send."""
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_pending = False
        if self.ended:
            return
        self.worker.send_datagrams(self.proto.datagrams(self.loop.time()))
        self._arm_timer()

    def _arm_timer(self) -> None:
        at = self.proto.timer()
        if at == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        events = self.proto.handle_timer(self.loop.time())
        self.handle(events)
        self.flush()
        self.worker.endpoint.track(self.proto)

    # -- drain / stop ----------------------------------------------------------------------
    def goaway(self) -> None:
        self.proto.send_goaway()
        self.flush()

    def close(self) -> None:
        """GOAWAY (if not sent yet) and CONNECTION_CLOSE; streams still open see a disconnect."""
        if self.ended:
            return
        self.proto.send_goaway()
        self.proto.close()
        self.flush()
        self._ended()
        self.worker.endpoint.forget(self.proto)
