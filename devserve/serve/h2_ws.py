"""WebSocket over an HTTP/2 stream (RFC 8441 extended CONNECT).

The CONNECT request is the handshake, so the ASGI side (:class:`WSSession`, shared with
HTTP/1.1) starts at once; accept answers ``:status 200``, a close before accept 403, a denial
its own status and body. Frames travel in DATA frames through an :class:`H2Stream`, so the
connection's flow control and write backpressure apply unchanged. Inbound credit is granted as
frames are parsed, and withheld while the app lags (the stream's window then fills up, instead
of pausing the whole connection). The client's END_STREAM is a TCP FIN: close 1006 if no close
frame came first; ending the WebSocket sends END_STREAM.
"""

from __future__ import annotations

from typing import Any, Protocol

from h2.errors import ErrorCodes

from devserve.protocols.websocket import WebSocketConnection
from devserve.serve.h2_stream import H2Stream, StreamHost
from devserve.serve.ws_session import Headers, WSSession


class WebSocketHost(StreamHost, Protocol):
    """The HTTP/2 connection as a WebSocket sees it: a stream host that tracks its tunnels."""

    @property
    def websockets(self) -> dict[int, H2WebSocket]: ...


class H2WebSocket(WSSession):
    """One WebSocket carried by one HTTP/2 stream."""

    def __init__(self, conn: WebSocketHost, sid: int, scope: dict[str, Any],
                 offers: bytes | None) -> None:
        config = conn.state.config
        ws = WebSocketConnection(max_size=config.ws_max_size,
                                 allow_deflate=config.ws_per_message_deflate, handshake=False)
        super().__init__(conn.state, conn.loop, scope, ws)
        self.conn = conn
        self.stream = H2Stream(conn, sid, False)
        self.stream.on_gone = self._stream_gone
        self.offers = offers
        self.peer_ended = False

    # -- from the connection ---------------------------------------------------------------
    def feed(self, data: bytes, flow_length: int) -> None:
        """DATA from the client: parse it, and grant the credit back unless the app lags."""
        self.ws.feed(data)
        if self._read_paused:
            self.stream.unacked += flow_length
        else:
            self.conn.h2.ack(self.stream.sid, flow_length)
        self.process()
        self.conn.schedule_flush()

    def end(self) -> None:
        """END_STREAM from the client: no more frames will come."""
        self.peer_ended = True
        self.stream.request_ended = True
        self.ws.feed(None)
        self.process()
        self.conn.schedule_flush()

    def _stream_gone(self) -> None:
        self.conn.websockets.pop(self.stream.sid, None)
        self.disconnect(1006 if not self.closed else 1000, "")
        self.closed = True

    # -- WSSession hooks -------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if data and not self._gone():
            self.stream.write_body(data, False)

    def _send_accept(self, subprotocol: str | None, headers: Headers) -> None:
        extra = self.ws.accept_stream(self.offers)
        if subprotocol is not None:
            extra.append((b"sec-websocket-protocol", subprotocol.encode("latin-1")))
        head = [*self.state.default_headers(), *extra, *headers]
        self.stream.write_response(200, head, b"", False)
        self.process()  # frames that arrived with (or before) the accept

    def _send_reject_head(self, status: int, headers: Headers) -> None:
        self.stream.write_response(status, [*self.state.default_headers(), *headers], b"",
                                   False)

    def _send_reject_body(self, data: bytes, finished: bool) -> None:
        self.stream.write_body(data, finished)

    def _close_transport(self) -> None:
        if not self._gone():
            self.stream.write_body(b"", True)  # END_STREAM; RST(NO_ERROR) if the client lingers

    def _abort(self) -> None:
        if not self.stream.closed:
            self.conn.h2.reset(self.stream.sid, ErrorCodes.CANCEL)
            self.conn.stream_gone(self.stream)
            self.conn.schedule_flush()

    def _pause_reading(self) -> None:
        pass  # credit is withheld in feed() while _read_paused

    def _resume_reading(self) -> None:
        self.stream.want_body()

    def _gone(self) -> bool:
        return self.stream.closed or self.stream.body_done or self.conn.closing

    async def _wait_writable(self) -> None:
        await self.stream.wait_writable()
