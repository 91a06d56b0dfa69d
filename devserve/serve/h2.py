"""asyncio glue for HTTP/2: drives the sans-IO :class:`H2Server` from a transport and runs one
:class:`HTTPCycle` per stream, each stream being the cycle's :class:`CycleOwner`.

Backpressure both ways: a stream's body is credited to the client only as the app takes it
(``receive()``), and ``send()`` waits until the stream's bytes fit the client's flow-control
window and the transport is not paused, so neither a slow app nor a slow client grows memory.
Timers: no streams for ``--timeout-keep-alive`` closes the connection (GOAWAY first); with
streams open but no frame from the client for ``--h2-ping-interval``, a PING goes out, and no
ACK within ``--h2-ping-timeout`` means a dead peer: GOAWAY and close. These and the drain
deadline are checked by the worker's sweep like every other connection deadline.
Extended CONNECT ``:protocol websocket`` (RFC 8441) streams are handed to :class:`H2WebSocket`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from h2.errors import ErrorCodes
from h2.exceptions import H2Error

from devserve.asgi.scope import apply_proxy_headers, http_scope
from devserve.protocols.http1 import RequestHead
from devserve.protocols.http2 import (
    BodyData,
    BodyEnd,
    ConnectionEnded,
    DrainAcked,
    H2Server,
    PingAcked,
    RequestOpened,
    SettingsChanged,
    StreamReset,
    WindowOpened,
)
from devserve.protocols.http2_fields import h2c_upgrade_settings
from devserve.serve.admission import body_over_limit
from devserve.serve.h2_stream import H2Stream, StreamCycle
from devserve.serve.h2_ws import H2WebSocket
from devserve.serve.responses import TOO_LARGE
from devserve.serve.state import TCPConnection, WorkerState
from devserve.serve.ws import websocket_scope

logger = logging.getLogger("devserve.error")

DRAIN_PING_WAIT = 1.0  # seconds to wait for the drain PING ACK before the final GOAWAY
_KEEPALIVE_PING = b"devsrvKA"
_HOP_BY_HOP = frozenset({b"connection", b"upgrade", b"http2-settings", b"keep-alive",
                         b"proxy-connection", b"transfer-encoding"})
SWITCHING_H2C = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"


@dataclass(frozen=True)
class H2Upgrade:
    """An HTTP/1.1 request that asked for ``Upgrade: h2c``: it becomes stream 1."""

    settings: bytes
    head: RequestHead


class H2Protocol(TCPConnection):
    """One HTTP/2 connection (TLS with ALPN h2, h2c prior knowledge, or an h2c upgrade)."""

    def __init__(self, state: WorkerState, loop: asyncio.AbstractEventLoop, scheme: str = "http",
                 upgrade: H2Upgrade | None = None) -> None:
        super().__init__(state, loop, scheme)
        config = state.config
        self.h2 = H2Server(max_concurrent_streams=config.h2_max_concurrent_streams,
                           max_header_list_size=config.h2_max_header_list_size,
                           enable_connect_protocol=config.ws != "none")
        self.upgrade = upgrade
        self.streams: dict[int, H2Stream] = {}
        self.websockets: dict[int, H2WebSocket] = {}  # their output streams are in .streams
        self.blocked: dict[int, H2Stream] = {}  # streams with bytes waiting for credit
        self.write_paused = False
        self._flush_pending = False
        self._idle_deadline: float | None = None
        self._drain_deadline: float | None = None
        self._last_seen = 0.0  # when the client last sent anything (keepalive PING clock)
        self._ping_deadline: float | None = None  # a keepalive PING awaits its ACK

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        upgrade = self.upgrade
        self.h2.initiate(upgrade.settings if upgrade is not None else None)
        self._last_seen = self.loop.time()
        if upgrade is not None:
            head = upgrade.head
            headers = [(n, v) for n, v in head.headers if n not in _HOP_BY_HOP]
            self._open_stream(RequestOpened(1, head.method, head.target, headers, True, False))
        else:
            self._idle_deadline = self.loop.time() + self.state.config.timeout_keep_alive
        if self.state.draining or self.state.shutting_down:
            self.start_draining()  # accepted by a generation going away: tell the client now
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            self.discard(data)
            return
        now = self._last_seen = self.loop.time()
        for event in self.h2.receive(data, now):
            if self.closing:
                return
            if isinstance(event, BodyData):
                self._on_body(event)
            elif isinstance(event, RequestOpened):
                self._open_stream(event)
            elif isinstance(event, BodyEnd):
                ws = self.websockets.get(event.stream_id)
                if ws is not None:
                    ws.end()
                    continue
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.request_ended = True
                    if stream.cycle is not None:
                        stream.cycle.end_body()
                    if stream.finished:
                        self.stream_gone(stream)
            elif isinstance(event, WindowOpened):
                self._on_window(event.stream_id)
            elif isinstance(event, SettingsChanged):
                self._on_window(0)
            elif isinstance(event, StreamReset):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    self._release_credit(stream)
                    self.stream_gone(stream)
            elif isinstance(event, DrainAcked):
                self._finish_drain()
            elif isinstance(event, PingAcked):
                self._ping_deadline = None
            elif isinstance(event, ConnectionEnded):
                if not event.by_peer:
                    logger.info("Closing HTTP/2 connection from %s: %s", self.client_str,
                                event.reason)
                self._close()
                return
        self._flush()

    def eof_received(self) -> bool | None:
        return None  # the client half-closed: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.state.connections.discard(self)
        self._idle_deadline = self._drain_deadline = self._ping_deadline = None
        for stream in list(self.streams.values()):
            stream.disconnect()
        self.streams.clear()
        self.blocked.clear()

    def pause_writing(self) -> None:
        # A client that does not read gets no more input processed either: otherwise a PING
        # or SETTINGS flood would grow our (unread) output without bound.
        self.write_paused = True
        if self.transport is not None and not self.closing:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()
        for stream in list(self.streams.values()):
            if not stream.buf:
                stream.wake()

    # -- streams ---------------------------------------------------------------------------
    def _open_stream(self, event: RequestOpened) -> None:
        state = self.state
        sid = event.stream_id
        if event.protocol is not None:
            self._open_tunnel(event)  # while stopping too: the session closes it with 1001
            return
        try:
            scope = http_scope(
                method=event.method, target=event.target, http_version="2",
                headers=event.headers, scheme=self.scheme, server=self.server,
                client=self.client, root_path=state.root_path, state=state.lifespan_state,
            )
        except (UnicodeDecodeError, ValueError):
            self.h2.reset(sid, ErrorCodes.PROTOCOL_ERROR)
            return
        scope["extensions"] = {"http.response.trailers": {}}
        if state.trusted is not None:
            apply_proxy_headers(scope, state.trusted)
        stream = H2Stream(self, sid, event.expects_continue)
        cycle = StreamCycle(scope, stream, extra_headers=state.default_headers())
        cycle.stream = stream
        stream.cycle = cycle
        self.streams[sid] = stream
        self._idle_deadline = None
        if event.end_stream:
            stream.request_ended = True
            cycle.end_body()
        verdict = state.admit(scope["path"], event.headers)
        task = state.start_cycle(self.loop, cycle, verdict, state.app)
        task.add_done_callback(stream.task_done)

    def _open_tunnel(self, event: RequestOpened) -> None:
        """Extended CONNECT (RFC 8441): a WebSocket; any other ``:protocol`` gets 501."""
        sid = event.stream_id
        if event.protocol != b"websocket":
            self.h2.send_head(sid, 501, [(b"content-length", b"0")], True)
            return
        state = self.state
        try:
            scope = websocket_scope(
                head_target=event.target, headers=event.headers,
                scheme="wss" if self.scheme == "https" else "ws", server=self.server,
                client=self.client, root_path=state.root_path, state=state.lifespan_state,
                trusted=state.trusted, http_version="2",
            )
        except (UnicodeDecodeError, ValueError):
            self.h2.reset(sid, ErrorCodes.PROTOCOL_ERROR)
            return
        subprotocols: list[str] = []
        offers: list[bytes] = []
        for name, value in event.headers:
            if name == b"sec-websocket-protocol":
                subprotocols += [p.strip() for p in value.decode("latin-1").split(",")
                                 if p.strip()]
            elif name == b"sec-websocket-extensions":
                offers.append(value)
        ws = H2WebSocket(self, sid, scope, b", ".join(offers) if offers else None)
        self.streams[sid] = ws.stream
        self.websockets[sid] = ws
        self._idle_deadline = None
        ws.start_app(subprotocols, any(b"permessage-deflate" in o for o in offers))
        if event.end_stream:
            ws.end()

    def _on_body(self, event: BodyData) -> None:
        ws = self.websockets.get(event.stream_id)
        if ws is not None:
            ws.feed(event.data, event.flow_length)
            return
        stream = self.streams.get(event.stream_id)
        cycle = stream.cycle if stream is not None else None
        if stream is None or cycle is None or cycle.response_complete:
            self.h2.ack(event.stream_id, event.flow_length)  # nobody will read it
            return
        stream.unacked += event.flow_length
        stream.received += len(event.data)
        if body_over_limit(self.state.limits, stream.received):
            self._body_too_large(stream)
            return
        cycle.feed_body(event.data)

    def _body_too_large(self, stream: H2Stream) -> None:
        self._release_credit(stream)
        cycle = stream.cycle
        if cycle is not None:
            cycle.mark_disconnected()  # the app sees http.disconnect; its sends are dropped
        if stream.head_sent:
            stream.abort()
            return
        stream.expect_trailers = False
        stream.write_response(TOO_LARGE.status, TOO_LARGE.headers(), TOO_LARGE.body, True)

    def _release_credit(self, stream: H2Stream) -> None:
        """Credit the connection window for body bytes no app will read."""
        if stream.unacked:
            self.h2.ack(stream.sid, stream.unacked)
            stream.unacked = 0

    def pump(self, stream: H2Stream) -> None:
        """Move a stream's pending response bytes into h2 as far as flow control allows."""
        if stream.closed or stream.finished:
            return
        h2 = self.h2
        end = stream.body_done and not stream.expect_trailers
        try:
            if stream.buf:
                sent = h2.send_data(stream.sid, stream.buf, end and stream.trailers is None)
                del stream.buf[:sent]
                if stream.buf:
                    self.blocked[stream.sid] = stream
                    return
                self.blocked.pop(stream.sid, None)
                if end and stream.trailers is None:
                    stream.finished = True
            elif end and stream.trailers is None:
                h2.send_data(stream.sid, b"", True)
                stream.finished = True
            if end and stream.trailers is not None and not stream.finished:
                h2.send_trailers(stream.sid, stream.trailers)
                stream.finished = True
        except (ValueError, H2Error) as exc:
            logger.error("Cannot send on HTTP/2 stream %d: %s", stream.sid, exc)
            stream.abort()
            return
        if not self.write_paused:
            stream.wake()
        if stream.finished:
            self.stream_finished(stream)

    def stream_finished(self, stream: H2Stream) -> None:
        """END_STREAM went out: done once the request ended too; else tell the client to stop
        sending the body nobody will read (RST_STREAM NO_ERROR, RFC 9113 §8.1)."""
        if not stream.request_ended:
            self.h2.reset(stream.sid, ErrorCodes.NO_ERROR)
            self._release_credit(stream)
        self.stream_gone(stream)

    def stream_gone(self, stream: H2Stream) -> None:
        if stream.closed and stream.sid not in self.streams:
            return
        stream.disconnect()
        self.streams.pop(stream.sid, None)
        self.blocked.pop(stream.sid, None)
        if not self.streams and not self.closing:
            if self.h2.goaway_last is not None:
                self._close()  # drained: the last in-flight stream is done
            else:
                self._idle_deadline = self.loop.time() + self.state.config.timeout_keep_alive

    def _on_window(self, stream_id: int) -> None:
        if stream_id:
            stream = self.blocked.get(stream_id)
            if stream is not None:
                self.pump(stream)
            return
        for stream in list(self.blocked.values()):
            self.pump(stream)

    # -- output ----------------------------------------------------------------------------
    def schedule_flush(self) -> None:
        """Coalesce the frames of every stream written in this loop iteration into one write."""
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        transport = self.transport
        if transport is None or transport.is_closing() or self.linger_deadline is not None:
            return  # gone, or closing gracefully (FIN sent: nothing more may be written)
        data = self.h2.data_to_send()
        if data:
            transport.write(data)

    def _close(self) -> None:
        if self.closing:
            return
        self.h2.close()
        self._flush()
        self.closing = True
        for stream in list(self.streams.values()):
            stream.disconnect()
        self.streams.clear()
        self.close_gracefully()  # GOAWAY is out; a reset must not destroy it

    # -- Connection (drain / stop) ---------------------------------------------------------
    def start_draining(self) -> None:
        """GOAWAY at once so the client opens new streams elsewhere; in-flight streams finish,
        then the connection closes (see :class:`H2Server` for the two GOAWAY phases)."""
        if self.closing or self.h2.draining:
            return
        self.h2.start_drain()
        self._drain_deadline = self.loop.time() + DRAIN_PING_WAIT
        for ws in list(self.websockets.values()):
            ws.start_draining()  # close 1012 / 1001: the client reconnects elsewhere
        self._flush()

    def _finish_drain(self) -> None:
        self._drain_deadline = None
        self.h2.finish_drain()
        if not self.streams:
            self._close()
        else:
            self._flush()

    def force_close(self) -> None:
        """The grace ran out: a streamed response without a declared length ends cleanly
        (END_STREAM, like HTTP/1.1's final chunk), any other open stream is reset, then
        GOAWAY and close."""
        if self.closing:
            self.end_lingering()
            return
        h2 = self.h2
        for stream in list(self.streams.values()):
            if stream.head_sent and not stream.finished and not stream.sized and not stream.buf:
                try:
                    h2.send_data(stream.sid, b"", True)
                except H2Error:
                    h2.reset(stream.sid, ErrorCodes.CANCEL)
            elif not stream.finished:
                h2.reset(stream.sid, ErrorCodes.CANCEL)
        self._close()
        if self.transport is not None and self.transport.get_write_buffer_size():
            self.transport.abort()  # a client that does not read must not hold the close

    def check_timeouts(self, now: float) -> None:
        if self.closing:
            self.check_linger(now)
            return
        for ws in list(self.websockets.values()):
            ws.check_timeouts(now)
        if self._drain_deadline is not None and now >= self._drain_deadline:
            self._finish_drain()
        elif self._idle_deadline is not None and now >= self._idle_deadline and not self.streams:
            self._close()
        elif self._ping_deadline is not None:
            if now >= self._ping_deadline:
                logger.info("Closing HTTP/2 connection from %s: no PING ACK within %.1f s",
                            self.client_str, self.state.config.h2_ping_timeout or 0.0)
                self._close()
        elif self.streams and not self.h2.draining:
            self._keepalive(now)
        self._flush()

    def _keepalive(self, now: float) -> None:
        """PING a connection whose client has been silent for the interval (streams open):
        a dead peer behind a long-lived response is found without any request timing out."""
        config = self.state.config
        interval = config.h2_ping_interval
        if not interval or now - self._last_seen < interval:
            return
        self.h2.ping(_KEEPALIVE_PING)
        self._last_seen = now  # the next PING is an interval away even if this one is lost
        if config.h2_ping_timeout:
            self._ping_deadline = now + config.h2_ping_timeout


# -- Upgrade: h2c (RFC 7540 §3.2) --------------------------------------------------------------
def h2c_upgrade(state: WorkerState, loop: asyncio.AbstractEventLoop, head: RequestHead
                ) -> H2Protocol | None:
    """The HTTP/2 protocol to continue a cleartext HTTP/1.1 connection with, *head* becoming
    stream 1, when it asks for ``Upgrade: h2c`` properly (see :func:`h2c_upgrade_settings`);
    else None: serve it as HTTP/1.1, as the RFC allows. The caller answers
    :data:`SWITCHING_H2C` and hands the transport over (``switch.take_over``)."""
    settings = h2c_upgrade_settings(head.headers)
    if settings is None:
        return None
    return H2Protocol(state, loop, "http", upgrade=H2Upgrade(settings, head))
