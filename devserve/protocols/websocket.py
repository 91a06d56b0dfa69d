"""Sans-IO WebSocket server adapter over wsproto: bytes in, typed events out, bytes to send.

Rules:
- ``feed(data)`` then ``next_events()``; pings are answered internally (their pong bytes are
  queued and returned by ``data_to_send()``), so the I/O layer only writes what it is given.
- An invalid handshake (no key, wrong version) is answered with 400/426 and :class:`WSFailed`.
- A message larger than ``max_size`` (counted after permessage-deflate inflation, so a
  compression bomb is caught too) becomes :class:`WSFailed` with code 1009; frame-level
  violations arrive as :class:`WSClosed` with wsproto's code (1002, 1007), already answered.
  On :class:`WSFailed` the caller sends ``close(code)`` and closes.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsproto import ConnectionType, WSConnection
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
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

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

    def __init__(self, *, max_size: int, allow_deflate: bool = True) -> None:
        self._ws = WSConnection(ConnectionType.SERVER)
        self.max_size = max_size
        self.allow_deflate = allow_deflate
        self._out = bytearray()
        self._parts: list[str | bytes] = []
        self._size = 0
        self.closed = False
        self._bad_handshake: bytes | None = None

    def feed(self, data: bytes | None) -> None:
        """Bytes from the peer; ``None`` means it closed the connection."""
        try:
            self._ws.receive_data(data)
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
        try:
            for event in self._ws.events():
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
                    self._out += self._ws.send(event.response())
                elif isinstance(event, Pong):
                    events.append(WSPong(bytes(event.payload)))
                elif isinstance(event, CloseConnection):
                    if not self.closed:
                        self.closed = True
                        try:
                            self._out += self._ws.send(event.response())
                        except LocalProtocolError:
                            pass
                    events.append(WSClosed(event.code, event.reason or ""))
                    return events
        except RemoteProtocolError as exc:
            events.append(WSFailed(1002, str(exc) or "protocol error"))
        return events

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    # -- handshake -------------------------------------------------------------------------
    def accept(self, subprotocol: str | None, headers: Headers, deflate: bool) -> bytes:
        extensions: list[Extension] = (
            [PerMessageDeflate()] if deflate and self.allow_deflate else []
        )
        return self._ws.send(AcceptConnection(
            subprotocol=subprotocol, extensions=extensions, extra_headers=headers))

    def reject(self, status: int, headers: Headers, has_body: bool) -> bytes:
        self.closed = True
        return self._ws.send(RejectConnection(status_code=status, headers=headers,
                                              has_body=has_body))

    def reject_body(self, data: bytes, finished: bool) -> bytes:
        return self._ws.send(RejectData(data=data, body_finished=finished))

    # -- open connection -------------------------------------------------------------------
    def message(self, data: str | bytes) -> bytes:
        event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
        return self._ws.send(event)

    def ping(self, payload: bytes) -> bytes:
        return self._ws.send(Ping(payload=payload))

    def close(self, code: int, reason: str = "") -> bytes:
        if self.closed:
            return b""
        self.closed = True
        try:
            return self._ws.send(CloseConnection(code=code, reason=reason or None))
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
    lines = [b"HTTP/1.1 %d %s" % (status, b"Upgrade Required" if status == 426
                                   else b"Bad Request")]
    lines += [k + b": " + v for k, v in headers if k.lower() not in (b"content-length",
                                                                     b"connection")]
    lines += [b"content-type: text/plain; charset=utf-8",
              b"content-length: " + str(len(body)).encode(), b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
