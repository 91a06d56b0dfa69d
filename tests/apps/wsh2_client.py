"""A raw HTTP/2 WebSocket client (RFC 8441): :class:`RawH2Client` plus extended CONNECT streams
whose DATA carries frames from wsproto's client frame layer (masked, as a client must).

It honours SETTINGS_ENABLE_CONNECT_PROTOCOL (no extended CONNECT until the server sent it) and
keeps plain requests usable on the same connection. :class:`SilentH2Client` never answers a
PING, to show the server's keepalive timeout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import h2.events
import h2.settings
from apps.h2_client import RawH2Client
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, Event, Message, TextMessage
from wsproto.extensions import Extension, PerMessageDeflate

ENABLE_CONNECT_PROTOCOL = h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL


@dataclass
class WSStream:
    deflate: PerMessageDeflate | None = None
    frames: Connection | None = None  # set once the server answered 200
    offset: int = 0  # bytes of the stream's DATA already parsed
    events: list[Event] = field(default_factory=list)
    parts: list[Any] = field(default_factory=list)  # of a message still arriving


class H2WebSocketClient(RawH2Client):
    """HTTP/2 connection that can also open WebSocket streams."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.ws: dict[int, WSStream] = {}
        self.pings = 0  # PINGs received from the server

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.PingReceived):
            self.pings += 1
        super()._on_event(event)

    def connect_protocol_enabled(self, timeout: float = 10.0) -> bool:
        """What the server's SETTINGS said about extended CONNECT (waits for SETTINGS)."""
        self.wait(lambda: bool(self.server_settings), timeout)
        return self.server_settings.get(ENABLE_CONNECT_PROTOCOL) == 1

    def open_ws(self, path: str, *, subprotocols: tuple[str, ...] = (),
                deflate: bool = False, force: bool = False) -> int:
        """Send the extended CONNECT; *force* sends it even if the server did not enable it."""
        if not force:
            assert self.connect_protocol_enabled(), "server did not enable extended CONNECT"
        headers = [(b":method", b"CONNECT"), (b":protocol", b"websocket"),
                   (b":scheme", self.scheme), (b":path", path.encode()),
                   (b":authority", self.authority), (b"sec-websocket-version", b"13")]
        if subprotocols:
            headers.append((b"sec-websocket-protocol", ", ".join(subprotocols).encode()))
        stream = WSStream()
        if deflate:
            stream.deflate = PerMessageDeflate()
            offer = stream.deflate.offer()
            headers.append((b"sec-websocket-extensions",
                            f"{stream.deflate.name}; {offer}".encode()
                            if isinstance(offer, str) else stream.deflate.name.encode()))
        sid = self.request(headers=headers, end=False)
        self.ws[sid] = stream
        return sid

    def accepted(self, sid: int, timeout: float = 10.0) -> int:
        """Wait for the response head; start the frame layer on 200. Returns the status."""
        resp = self.responses[sid]
        self.wait(lambda: bool(resp.headers) or resp.done, timeout)
        stream = self.ws[sid]
        if resp.status == 200:
            extensions: list[Extension] = []
            answer = dict(resp.headers).get(b"sec-websocket-extensions")
            if stream.deflate is not None and answer is not None:
                stream.deflate.finalize(answer.decode())
                extensions.append(stream.deflate)
            stream.frames = Connection(ConnectionType.CLIENT, extensions)
        return resp.status

    def ws_send(self, sid: int, event: Event, *, end: bool = False,
                timeout: float = 10.0) -> None:
        """Send one event, waiting for flow-control credit as often as needed."""
        frames = self.ws[sid].frames
        assert frames is not None
        data = frames.send(event)
        deadline = time.monotonic() + timeout
        sent = self.send_body(sid, data, end=end)
        while sent < len(data):
            if time.monotonic() > deadline:
                raise AssertionError("no flow-control credit from the server")
            self.read_once(0.1)
            sent += self.send_body(sid, data[sent:], end=end)

    def ws_events(self, sid: int) -> list[Event]:
        """Events the server sent on *sid* so far, message parts joined into whole messages
        (parsed once, kept in order)."""
        stream = self.ws[sid]
        body = self.responses[sid].body
        if stream.frames is not None and stream.offset < len(body):
            stream.frames.receive_data(bytes(body[stream.offset:]))
            stream.offset = len(body)
            for event in stream.frames.events():
                if isinstance(event, Message):
                    stream.parts.append(event.data)
                    if not event.message_finished:
                        continue
                    if isinstance(event, TextMessage):
                        event = TextMessage(data="".join(map(str, stream.parts)))
                    else:
                        event = BytesMessage(data=b"".join(map(bytes, stream.parts)))
                    stream.parts.clear()
                stream.events.append(event)
        return stream.events

    def ws_next(self, sid: int, timeout: float = 10.0) -> Event:
        """The next unconsumed event on *sid* (waits for it)."""
        deadline = time.monotonic() + timeout
        events = self.ws_events(sid)
        while not events:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no websocket event on stream {sid}")
            if not self.read_once(min(remaining, 0.2)):
                events = self.ws_events(sid)
                if not events:
                    raise AssertionError("the server closed the connection")
            events = self.ws_events(sid)
        return events.pop(0)


class SilentH2Client(H2WebSocketClient):
    """Sends what the test asks for, but drops the PING ACKs h2 queues by itself on reads."""

    _muted = False

    def read_once(self, timeout: float) -> bool:
        self._muted = True
        try:
            return super().read_once(timeout)
        finally:
            self._muted = False

    def flush(self) -> None:
        if self._muted:
            self.conn.data_to_send()  # PING ACKs (and WINDOW_UPDATEs) never leave
        else:
            super().flush()
