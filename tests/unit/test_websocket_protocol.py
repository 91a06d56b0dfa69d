"""The sans-IO ``WebSocketConnection`` fed real bytes: handshakes and frames come from wsproto's
CLIENT connection (an independent peer), and what the server hands back is fed into that
client and checked there. Frames no well-behaved client would send (unmasked, reserved
opcodes, RSV bits, oversized pings, bad close codes) are built by hand with
``tests/apps/ws_raw.frame``.
"""

from __future__ import annotations

import struct

import pytest
from apps.ws_raw import BINARY, CLOSE, CONT, PING, TEXT, close_payload, frame
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from devserve.protocols.websocket import (
    WebSocketConnection,
    WSClosed,
    WSFailed,
    WSMessage,
    WSPong,
    WSRequest,
)

MAX = 64 * 1024


def request_bytes(client: WSConnection, *, subprotocols: list[str] | None = None,
                  deflate: bool = False) -> bytes:
    return client.send(Request(host="example.test", target="/chat",
                               subprotocols=subprotocols or [],
                               extensions=[PerMessageDeflate()] if deflate else []))


def client_events(client: WSConnection, data: bytes) -> list[Event]:
    client.receive_data(data)
    return list(client.events())


def open_pair(*, max_size: int = MAX, allow_deflate: bool = True, deflate: bool = False,
              subprotocols: list[str] | None = None, choose: str | None = None
              ) -> tuple[WSConnection, WebSocketConnection]:
    """A client and a server that completed the opening handshake."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WebSocketConnection(max_size=max_size, allow_deflate=allow_deflate)
    server.feed(request_bytes(client, subprotocols=subprotocols, deflate=deflate))
    (req,) = server.next_events()
    assert isinstance(req, WSRequest)
    (accepted,) = client_events(client, server.accept(choose, [], req.offers_deflate))
    assert isinstance(accepted, AcceptConnection)
    return client, server


def to_server(server: WebSocketConnection, data: bytes) -> list[object]:
    server.feed(data)
    return list(server.next_events())


def server_close_frame(server: WebSocketConnection, client: WSConnection) -> CloseConnection:
    """The close frame the server queued, as the client parses it."""
    events = client_events(client, server.data_to_send())
    closes = [e for e in events if isinstance(e, CloseConnection)]
    assert closes, events
    return closes[0]


# --- handshake ----------------------------------------------------------------------------------


def test_request_reports_subprotocols_and_deflate_offer() -> None:
    client = WSConnection(ConnectionType.CLIENT)
    server = WebSocketConnection(max_size=MAX)
    server.feed(request_bytes(client, subprotocols=["chat.v1", "chat.v2"], deflate=True))
    assert server.next_events() == [WSRequest(["chat.v1", "chat.v2"], True)]

    plain = WSConnection(ConnectionType.CLIENT)
    server = WebSocketConnection(max_size=MAX)
    server.feed(request_bytes(plain))
    assert server.next_events() == [WSRequest([], False)]


def test_request_split_across_reads() -> None:
    client = WSConnection(ConnectionType.CLIENT)
    server = WebSocketConnection(max_size=MAX)
    data = request_bytes(client, subprotocols=["a"])
    events: list[object] = []
    for i in range(0, len(data), 7):
        server.feed(data[i:i + 7])
        events += server.next_events()
    assert events == [WSRequest(["a"], False)]


def test_accept_sends_subprotocol_extra_headers_and_deflate() -> None:
    client = WSConnection(ConnectionType.CLIENT)
    server = WebSocketConnection(max_size=MAX)
    server.feed(request_bytes(client, subprotocols=["chat.v1", "chat.v2"], deflate=True))
    server.next_events()
    response = server.accept("chat.v2", [(b"x-extra", b"1")], True)
    assert response.startswith(b"HTTP/1.1 101 ")
    (event,) = client_events(client, response)
    assert isinstance(event, AcceptConnection)
    assert event.subprotocol == "chat.v2"
    assert [e.name for e in event.extensions] == ["permessage-deflate"]
    assert (b"x-extra", b"1") in [(bytes(k).lower(), bytes(v)) for k, v in event.extra_headers]


@pytest.mark.parametrize(("allow", "offered"), [(False, True), (True, False)])
def test_no_deflate_unless_allowed_and_offered(allow: bool, offered: bool) -> None:
    client = WSConnection(ConnectionType.CLIENT)
    server = WebSocketConnection(max_size=MAX, allow_deflate=allow)
    server.feed(request_bytes(client, deflate=offered))
    (req,) = server.next_events()
    assert isinstance(req, WSRequest)
    response = server.accept(None, [], req.offers_deflate)
    assert b"sec-websocket-extensions" not in response.lower()
    (event,) = client_events(client, response)
    assert isinstance(event, AcceptConnection) and event.extensions == []


def test_reject_with_status_headers_and_body() -> None:
    client = WSConnection(ConnectionType.CLIENT)
    server = WebSocketConnection(max_size=MAX)
    server.feed(request_bytes(client))
    server.next_events()
    data = server.reject(401, [(b"www-authenticate", b"Bearer")], True)
    data += server.reject_body(b"denied: ", False) + server.reject_body(b"no token", True)
    assert server.closed
    events = client_events(client, data)
    assert isinstance(events[0], RejectConnection)
    assert events[0].status_code == 401 and events[0].has_body
    assert (b"www-authenticate", b"Bearer") in events[0].headers
    body = b"".join(bytes(e.data) for e in events if isinstance(e, RejectData))
    assert body == b"denied: no token"
    assert isinstance(events[-1], RejectData) and events[-1].body_finished


@pytest.mark.parametrize("request_head", [
    b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
], ids=["missing-key", "version-8"])
def test_invalid_handshake_is_reported(request_head: bytes) -> None:
    """wsproto refuses these requests; the adapter must surface that (an event or bytes for
    the peer), otherwise the I/O layer has nothing to answer and the connection hangs."""
    server = WebSocketConnection(max_size=MAX)
    server.feed(request_head)
    events = server.next_events()
    out = server.data_to_send()
    assert events or out, "invalid handshake swallowed: no event and nothing to send"


# --- messages -----------------------------------------------------------------------------------


@pytest.mark.parametrize("deflate", [False, True])
def test_messages_in_both_directions(deflate: bool) -> None:
    client, server = open_pair(deflate=deflate)
    assert to_server(server, client.send(Message(data="héllo ☃"))) == [WSMessage("héllo ☃")]
    assert to_server(server, client.send(Message(data=b"\x00\xff"))) == [WSMessage(b"\x00\xff")]
    assert to_server(server, client.send(Message(data=""))) == [WSMessage("")]
    (text,) = client_events(client, server.message("reply ✓"))
    assert isinstance(text, TextMessage) and text.data == "reply ✓"
    (binary,) = client_events(client, server.message(b"\x01\x02"))
    assert isinstance(binary, BytesMessage) and binary.data == b"\x01\x02"


@pytest.mark.parametrize("parts", [["frag", "men", "ted ☃"], [b"\x00" * 10, b"\x01", b""]])
def test_fragmented_message_is_one_event(parts: list[str] | list[bytes]) -> None:
    client, server = open_pair()
    for part in parts[:-1]:
        assert to_server(server, client.send(Message(data=part, message_finished=False))) == []
    events = to_server(server, client.send(Message(data=parts[-1], message_finished=True)))
    joined = "".join(parts) if isinstance(parts[0], str) else b"".join(parts)  # type: ignore[arg-type]
    assert events == [WSMessage(joined)]


def test_messages_split_at_every_byte() -> None:
    client, server = open_pair()
    data = client.send(Message(data="one")) + client.send(Message(data=b"two"))
    events: list[object] = []
    for i in range(len(data)):
        events += to_server(server, data[i:i + 1])
    assert events == [WSMessage("one"), WSMessage(b"two")]


# --- pings --------------------------------------------------------------------------------------


def test_client_ping_is_answered_internally() -> None:
    client, server = open_pair()
    assert to_server(server, client.send(Ping(payload=b"are you there"))) == []
    (pong,) = client_events(client, server.data_to_send())
    assert isinstance(pong, Pong) and pong.payload == b"are you there"
    assert server.data_to_send() == b""  # handed out once


def test_server_ping_and_the_pong_event() -> None:
    client, server = open_pair()
    (ping,) = client_events(client, server.ping(b"devserve"))
    assert isinstance(ping, Ping) and ping.payload == b"devserve"
    assert to_server(server, client.send(ping.response())) == [WSPong(b"devserve")]


# --- size limit ---------------------------------------------------------------------------------


def test_message_at_the_limit_passes_one_byte_more_fails_1009() -> None:
    client, server = open_pair(max_size=1024)
    assert to_server(server, client.send(Message(data=b"a" * 1024))) == [WSMessage(b"a" * 1024)]
    events = to_server(server, client.send(Message(data=b"a" * 1025)))
    assert events == [WSFailed(1009, "message too big")]


def test_fragmented_message_over_the_limit_fails_1009() -> None:
    client, server = open_pair(max_size=1024)
    assert to_server(server, client.send(Message(data="x" * 600, message_finished=False))) == []
    events = to_server(server, client.send(Message(data="x" * 600, message_finished=False)))
    assert events == [WSFailed(1009, "message too big")]


def test_limit_counts_inflated_bytes() -> None:
    """A compression bomb: tiny on the wire, over the limit once inflated."""
    client, server = open_pair(max_size=MAX, deflate=True)
    wire = client.send(Message(data=b"\x00" * (1024 * 1024)))
    assert len(wire) < MAX // 8
    events = to_server(server, wire)
    assert events == [WSFailed(1009, "message too big")]


def test_size_resets_between_messages() -> None:
    client, server = open_pair(max_size=1000)
    for _ in range(5):
        assert to_server(server, client.send(Message(data=b"m" * 900))) == [WSMessage(b"m" * 900)]


# --- protocol violations ------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "code"), [
    (frame(TEXT, b"unmasked", mask=False), 1002),
    (frame(3, b"reserved data opcode"), 1002),
    (frame(0xB, b""), 1002),
    (frame(TEXT, b"rsv1", rsv=4), 1002),
    (frame(BINARY, b"rsv3", rsv=1), 1002),
    (frame(PING, b"p" * 126), 1002),
    (frame(PING, b"frag", fin=False), 1002),
    (frame(CONT, b"no message to continue"), 1002),
    (frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), 1002),
    (frame(CLOSE, b"\x03"), 1002),
    (frame(CLOSE, close_payload(999)), 1002),
    (frame(CLOSE, close_payload(1005)), 1002),
    (frame(CLOSE, close_payload(5000)), 1002),
    (frame(TEXT, b"\xc0\xaf"), 1007),
    (frame(TEXT, b"\xed\xa0\x80"), 1007),
    (frame(CLOSE, close_payload(1000, b"\xff")), 1007),
], ids=["unmasked", "opcode-3", "opcode-0xB", "rsv1", "rsv3", "ping-126", "fragmented-ping",
        "orphan-continuation", "text-inside-text", "close-1-byte", "close-999", "close-1005",
        "close-5000", "overlong-utf8", "surrogate-utf8", "close-reason-utf8"])
def test_protocol_violation_closes_with_code(data: bytes, code: int) -> None:
    """The event carries the close code, and the close frame queued for the peer has it too."""
    client, server = open_pair()
    events = to_server(server, data)
    assert len(events) == 1, events
    (event,) = events
    assert isinstance(event, WSFailed | WSClosed), event
    assert event.code == code
    sent = server.data_to_send() or server.close(event.code, event.reason)
    client.receive_data(sent)
    closes = [e for e in client.events() if isinstance(e, CloseConnection)]
    assert [c.code for c in closes] == [code]
    assert server.closed


# --- closing ------------------------------------------------------------------------------------


def test_client_close_is_answered_once() -> None:
    client, server = open_pair()
    events = to_server(server, client.send(CloseConnection(code=1000, reason="bye")))
    assert events == [WSClosed(1000, "bye")]
    reply = server_close_frame(server, client)
    assert (reply.code, reply.reason) == (1000, "bye")
    assert server.closed
    assert server.close(1011) == b""  # nothing more goes out


def test_client_close_without_code_is_1005_and_answered_empty() -> None:
    _, server = open_pair()
    assert to_server(server, frame(CLOSE, b"")) == [WSClosed(1005, "")]
    out = server.data_to_send()
    assert out[:1] == bytes([0x88])  # FIN + close
    assert out[1] & 0x7F in (0, 2)  # empty, or 1000 (never 1005 on the wire)
    if out[1] & 0x7F == 2:
        assert struct.unpack("!H", out[2:4])[0] == 1000


def test_server_close_then_client_reply() -> None:
    client, server = open_pair()
    (close,) = client_events(client, server.close(4001, "custom reason"))
    assert isinstance(close, CloseConnection)
    assert (close.code, close.reason) == (4001, "custom reason")
    assert server.closed
    events = to_server(server, client.send(close.response()))
    assert events == [WSClosed(4001, "custom reason")]
    assert server.data_to_send() == b""  # the reply to our close is not answered again


def test_peer_eof_is_1006() -> None:
    _, server = open_pair()
    server.feed(None)
    assert server.next_events() == [WSClosed(1006, "")]
