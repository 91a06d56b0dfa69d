"""Sans-IO WebSocket server adapter over wsproto: bytes in, typed events out, bytes to send.

Rules:
- ``feed(data)`` then ``next_events()``; pings are answered internally (their pong bytes are
  queued and returned by ``data_to_send()``), so the I/O layer only writes what it is given.
- An invalid handshake (no key, wrong version) is answered with 400/426 and :class:`WSFailed`.
- A message larger than ``max_size`` (counted after permessage-deflate inflation, so a
  compression bomb is caught too) becomes :class:`WSFailed` with code 1009; frame-level
  violations arrive as :class:`WSClosed` with wsproto's code (1002, 1007), already answered.
  On :class:`WSFailed` the caller sends ``close(code)`` and closes.
- Over HTTP/2 (RFC 8441, ``handshake=False``) the extended CONNECT request is the handshake:
  the I/O layer reads it, and :meth:`WebSocketConnection.accept_stream` negotiates
  permessage-deflate and starts wsproto's frame layer; stream DATA is then fed like socket bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.handshake import server_extensions_handshake
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from devserve.protocols.http1 import reason_phrase

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class WSRequest:
    subprotocols: list[str]
    offers_deflate: bool


@dataclass(frozen=True, slots=True)
class WSMessage:
    data: str | bytes


@dataclass(frozen=True, slots=True)
class WSClosed:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class WSFailed:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class WSPong:
    payload: bytes


WSEvent = WSRequest | WSMessage | WSClosed | WSFailed | WSPong


class WebSocketConnection:
    """One server-side WebSocket connection, from the handshake request to the close."""

    def __init__(self, *, max_size: int, allow_deflate: bool = True,
                 handshake: bool = True) -> None:
        # Without a handshake (HTTP/2) the frame layer starts at accept_stream().
        self._ws: WSConnection | Connection | None = (
            WSConnection(ConnectionType.SERVER) if handshake else None)
        self._early = bytearray()  # HTTP/2: bytes sent before the accept (a client may not)
        self._early_eof = False
        self.max_size = max_size
        self.allow_deflate = allow_deflate
        self._out = bytearray()
        self._parts: list[str | bytes] = []
        self._size = 0
        self.closed = False
        self._bad_handshake: bytes | None = None

    def feed(self, data: bytes | None) -> None:
        """Bytes from the peer; ``None`` means it closed the connection."""
        ws = self._ws
        if ws is None:
            if data is None:
                self._early_eof = True
            elif len(self._early) <= self.max_size:
                self._early += data
            return
        if isinstance(ws, Connection) and ws.state is ConnectionState.CLOSED:
            return  # the frame layer raises on bytes after the close; they are moot
        try:
            ws.receive_data(data)
        except RemoteProtocolError as exc:
            # Only the handshake raises here (frame errors become close events): answer it.
            self._bad_handshake = _handshake_rejection(exc)

    def next_events(self) -> list[WSEvent]:
        events: list[WSEvent] = []
        if self._bad_handshake is not None:
            self.closed = True
            self._out += self._bad_handshake
            self._bad_handshake = None
            events.append(WSFailed(1002, "invalid websocket handshake"))
            return events
        if self._ws is None:
            if self._early_eof and not self.closed:
                self.closed = True
                events.append(WSClosed(1006, ""))
            return events
        try:
            for event in self._frames.events():
                if isinstance(event, Request):
                    deflate = any(
                        str(ext).split(";")[0].strip() == "permessage-deflate"
                        for ext in event.extensions
                    )
                    events.append(WSRequest(list(event.subprotocols), deflate))
                elif isinstance(event, TextMessage | BytesMessage):
                    self._size += len(event.data)
                    if self._size > self.max_size:
                        events.append(WSFailed(1009, "message too big"))
                        return events
                    self._parts.append(bytes(event.data) if isinstance(event.data, bytearray)
                                       else event.data)
                    if event.message_finished:
                        data: str | bytes = (
                            "".join(p for p in self._parts if isinstance(p, str))
                            if isinstance(event, TextMessage)
                            else b"".join(p for p in self._parts if isinstance(p, bytes))
                        )
                        self._parts.clear()
                        self._size = 0
                        events.append(WSMessage(data))
                elif isinstance(event, Ping):
                    self._out += self._frames.send(event.response())
                elif isinstance(event, Pong):
                    events.append(WSPong(bytes(event.payload)))
                elif isinstance(event, CloseConnection):
                    if not self.closed:
                        self.closed = True
                        try:
                            self._out += self._frames.send(event.response())
                        except LocalProtocolError:
                            pass
                    events.append(WSClosed(event.code, event.reason or ""))
                    return events
        except RemoteProtocolError as exc:
            events.append(WSFailed(1002, str(exc) or "protocol error"))
        return events

    @property
    def _frames(self) -> WSConnection | Connection:
        if self._ws is None:
            raise LocalProtocolError("the websocket stream was not accepted")
        return self._ws

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    # -- handshake -------------------------------------------------------------------------
    def accept(self, subprotocol: str | None, headers: Headers, deflate: bool) -> bytes:
        extensions: list[Extension] = (
            [PerMessageDeflate()] if deflate and self.allow_deflate else []
        )
        return self._frames.send(AcceptConnection(
            subprotocol=subprotocol, extensions=extensions, extra_headers=headers))

    def accept_stream(self, offers: bytes | None) -> Headers:
        """HTTP/2: start the frame layer; returns the response fields (the accepted
        ``sec-websocket-extensions``) that the HEADERS frame must carry."""
        offered = [o.strip() for o in (offers or b"").decode("latin-1").split(",") if o.strip()]
        supported: list[Extension] = [PerMessageDeflate()] if self.allow_deflate else []
        accepted = server_extensions_handshake(offered, supported) if offered else None
        self._ws = Connection(ConnectionType.SERVER, supported)
        if self._early:
            self._ws.receive_data(bytes(self._early))
            self._early.clear()
        if self._early_eof:
            self._ws.receive_data(None)
        return [(b"sec-websocket-extensions", accepted)] if accepted else []

    def reject(self, status: int, headers: Headers, has_body: bool) -> bytes:
        self.closed = True
        return self._frames.send(RejectConnection(status_code=status, headers=headers,
                                              has_body=has_body))

    def reject_body(self, data: bytes, finished: bool) -> bytes:
        return self._frames.send(RejectData(data=data, body_finished=finished))

    # -- open connection -------------------------------------------------------------------
    def message(self, data: str | bytes) -> bytes:
        event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
        return self._frames.send(event)

    def ping(self, payload: bytes) -> bytes:
        return self._frames.send(Ping(payload=payload))

    def close(self, code: int, reason: str = "") -> bytes:
        if self.closed:
            return b""
        self.closed = True
        try:
            return self._frames.send(CloseConnection(code=code, reason=reason or None))
        except LocalProtocolError:
            return b""


def _handshake_rejection(exc: RemoteProtocolError) -> bytes:
    """A complete HTTP error response for a broken upgrade request (RFC 6455 4.4: 426 with
    the supported version when the version is wrong)."""
    hint = exc.event_hint
    status = getattr(hint, "status_code", 400) or 400
    headers = [(bytes(k), bytes(v)) for k, v in getattr(hint, "headers", [])]
    if not any(k.lower() == b"sec-websocket-version" for k, _ in headers) and status == 426:
        headers.append((b"sec-websocket-version", b"13"))
    body = b"Bad WebSocket handshake\n"
    lines = [b"HTTP/1.1 %d %s" % (status, reason_phrase(status))]
    lines += [k + b": " + v for k, v in headers if k.lower() not in (b"content-length",
                                                                     b"connection")]
    lines += [b"content-type: text/plain; charset=utf-8",
              b"content-length: " + str(len(body)).encode(), b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
