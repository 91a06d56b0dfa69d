"""switch.take_over: every protocol takeover (sniffer to HTTP/1.1 or HTTP/2, HTTP/1.1 to h2c,
HTTP/1.1 to WebSocket) on an in-memory transport, with real client bytes (h11, h2, wsproto).

What each test checks is what a takeover must carry: the bytes read ahead by the old protocol
reach the new one once and in order, the worker's connection set holds the new protocol and not
the old one, and the transport ends up with the new protocol, reading.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping
from typing import Any

import h2.config
import h2.connection
import h2.events
import h11
import pytest
import wsproto
import wsproto.events

from devserve.config import Config
from devserve.serve.h1 import H1Protocol
from devserve.serve.h2 import H2Protocol
from devserve.serve.sniff import SniffProtocol
from devserve.serve.state import WorkerState
from devserve.serve.switch import take_over
from devserve.serve.ws import WSProtocol


class MemoryTransport(asyncio.Transport):
    """A transport that records what the server writes and which protocol owns it."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: asyncio.BaseProtocol | None = None
        self.written = bytearray()
        self.closed = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000),
                "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def take(self) -> bytes:
        out = bytes(self.written)
        self.written.clear()
        return out

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_write_buffer_size(self) -> int:
        return 0


async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """HTTP: ``<path> via <http_version>``; WebSocket: accept, then echo text."""
    if scope["type"] == "websocket":
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": "echo " + message["text"]})
        return
    body = f"{scope['path']} via {scope['http_version']}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Let the loop run (no wall-clock wait) until *predicate* holds."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{what} did not happen")


def serve(state: WorkerState, first: asyncio.Protocol) -> MemoryTransport:
    transport = MemoryTransport()
    transport.set_protocol(first)
    first.connection_made(transport)
    return transport


def feed(transport: MemoryTransport, data: bytes) -> None:
    protocol = transport.get_protocol()
    assert isinstance(protocol, asyncio.Protocol)
    protocol.data_received(data)


def new_state(**config: Any) -> WorkerState:
    return WorkerState(Config(app=app, access_log=False, **config), app)


def h11_response(data: bytes) -> tuple[int, bytes]:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    status, body = 0, b""
    while not isinstance(event := client.next_event(), h11.EndOfMessage):
        assert event is not h11.NEED_DATA, data
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
    return status, body


def h2_responses(client: h2.connection.H2Connection, data: bytes) -> dict[int, bytes]:
    """Bodies of the streams that ended in *data*, by stream id."""
    bodies: dict[int, bytearray] = {}
    ended: dict[int, bytes] = {}
    for event in client.receive_data(data):
        if isinstance(event, h2.events.DataReceived):
            bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
        if isinstance(event, h2.events.StreamEnded):
            ended[event.stream_id] = bytes(bodies.get(event.stream_id, b""))
    return ended


def test_take_over_releases_writes_the_preamble_then_feeds_the_new_protocol() -> None:
    calls: list[str] = []

    class Old:
        def release_transport(self) -> None:
            calls.append("release")

    class New(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            calls.append(f"made, wrote {bytes(written.written)!r}")

        def data_received(self, data: bytes) -> None:
            calls.append(f"data {data!r}")

    written = MemoryTransport()
    new = New()
    take_over(written, Old(), new, preamble=b"101", buffered=b"rest")
    assert calls == ["release", "made, wrote b'101'", "data b'rest'"]
    assert written.protocol is new


@pytest.mark.parametrize("split", [1, 5])
def test_sniffer_hands_cleartext_http11_to_h1_with_the_bytes_it_read(split: int) -> None:
    async def scenario() -> None:
        state = new_state()
        sniff = SniffProtocol(state, asyncio.get_running_loop(), "http")
        transport = serve(state, sniff)
        assert state.connections == {sniff}
        request = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        feed(transport, request[:split])
        feed(transport, request[split:])
        h1 = transport.protocol
        assert isinstance(h1, H1Protocol)
        assert state.connections == {h1}
        await until(lambda: b"/a via 1.1" in transport.written, "the HTTP/1.1 response")
        assert h11_response(transport.take()) == (200, b"/a via 1.1")

    asyncio.run(scenario())


def test_sniffer_hands_the_h2_preface_to_h2_even_split_inside_it() -> None:
    async def scenario() -> None:
        state = new_state()
        transport = serve(state, SniffProtocol(state, asyncio.get_running_loop(), "http"))
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(1, [(":method", "GET"), (":scheme", "http"),
                                (":authority", "x"), (":path", "/b")], end_stream=True)
        data = client.data_to_send()
        feed(transport, data[:10])  # a prefix of the preface: still sniffing
        assert isinstance(transport.protocol, SniffProtocol)
        feed(transport, data[10:])
        assert isinstance(transport.protocol, H2Protocol)
        assert state.connections == {transport.protocol}
        await until(lambda: b"/b via 2" in transport.written, "the HTTP/2 response")
        assert h2_responses(client, transport.take()) == {1: b"/b via 2"}

    asyncio.run(scenario())


def test_h1_upgrades_to_h2c_carrying_the_preface_sent_with_the_request() -> None:
    async def scenario() -> None:
        state = new_state()
        h1 = H1Protocol(state, asyncio.get_running_loop())
        transport = serve(state, h1)
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        settings = (client.initiate_upgrade_connection() or b"").decode()
        head = (f"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                f"Upgrade: h2c\r\nHTTP2-Settings: {settings}\r\n\r\n").encode()
        feed(transport, head + client.data_to_send())  # the preface rides with the request
        h2c = transport.protocol
        assert isinstance(h2c, H2Protocol) and h1.closing
        assert state.connections == {h2c}
        await until(lambda: b"/up via 2" in transport.written, "the response on stream 1")
        out = transport.take()
        switching, _, frames = out.partition(b"\r\n\r\n")
        assert switching.startswith(b"HTTP/1.1 101 Switching Protocols")
        assert h2_responses(client, frames) == {1: b"/up via 2"}

    asyncio.run(scenario())


def test_h1_hands_a_websocket_upgrade_to_wsprotocol_resuming_reading() -> None:
    async def scenario() -> None:
        state = new_state()
        h1 = H1Protocol(state, asyncio.get_running_loop())
        transport = serve(state, h1)
        client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        feed(transport, client.send(wsproto.events.Request(host="x", target="/ws")))
        ws = transport.protocol
        assert isinstance(ws, WSProtocol) and h1.closing
        assert state.connections == {ws}
        assert transport.reading
        await until(lambda: bool(transport.written), "the handshake answer")
        client.receive_data(transport.take())
        assert isinstance(next(client.events()), wsproto.events.AcceptConnection)
        feed(transport, client.send(wsproto.events.TextMessage(data="hi")))
        await until(lambda: bool(transport.written), "the echo")
        client.receive_data(transport.take())
        message = next(client.events())
        assert isinstance(message, wsproto.events.TextMessage) and message.data == "echo hi"
        ws.force_close()

    asyncio.run(scenario())
