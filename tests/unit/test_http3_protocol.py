"""The sans-IO HTTP/3 layer with real bytes: an aioquic client connection talks to
:class:`H3Endpoint` in memory (datagrams passed by hand, time passed in)."""

from __future__ import annotations

import os
import ssl

import pytest
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection, encode_frame
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamDataReceived

from devserve.net.tls import ensure_dev_certificate
from devserve.protocols.http3 import (
    MAX_STREAM_DATA,
    BodyData,
    ConnectionEnded,
    H3Endpoint,
    H3ServerConnection,
    RequestOpened,
    server_configuration,
)

SERVER = ("127.0.0.1", 4433)
CLIENT = ("127.0.0.1", 50000)


def make_endpoint(tmp_path_factory: pytest.TempPathFactory, **options: int) -> H3Endpoint:
    dev = ensure_dev_certificate(tmp_path_factory.mktemp("cert"))
    return H3Endpoint(server_configuration(str(dev.cert_path), str(dev.key_path), None,
                                           idle_timeout=5.0), **options)


@pytest.fixture
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> H3Endpoint:
    return make_endpoint(tmp_path_factory, max_connections=2)


def request(path: bytes, method: bytes = b"GET") -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":scheme", b"https"), (b":authority", b"localhost"),
            (b":path", path)]


class Pair:
    """A client QuicConnection + H3Connection wired to an endpoint by hand."""

    def __init__(self, endpoint: H3Endpoint, addr: tuple[str, int] = CLIENT) -> None:
        self.endpoint = endpoint
        self.addr = addr
        self.now = 1000.0
        self.quic = QuicConnection(configuration=QuicConfiguration(
            is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE))
        self.quic.connect(SERVER, now=self.now)
        self.h3 = H3Connection(self.quic)
        self.server: H3ServerConnection | None = None
        self.server_events: list[object] = []
        self.client_events: list[object] = []
        self.uni_data: dict[int, bytes] = {}  # what the server sent on its unidirectional streams

    def pump(self, rounds: int = 8) -> None:
        for _ in range(rounds):
            moved = False
            for data, _addr in self.quic.datagrams_to_send(self.now):
                moved = True
                conn, events = self.endpoint.receive(data, self.addr, self.now)
                if conn is not None:
                    self.server = conn
                self.server_events.extend(events)
            if self.server is not None:
                for data, _addr in self.server.datagrams(self.now):
                    moved = True
                    self.quic.receive_datagram(data, SERVER, self.now)
                    while (event := self.quic.next_event()) is not None:
                        if isinstance(event, StreamDataReceived) and event.stream_id % 4 == 3:
                            sid = event.stream_id
                            self.uni_data[sid] = self.uni_data.get(sid, b"") + event.data
                        self.client_events.extend(self.h3.handle_event(event))
            if not moved:
                return
            self.now += 0.001

    def request(self, headers: list[tuple[bytes, bytes]], *, end_stream: bool = True
                ) -> tuple[int, H3ServerConnection]:
        """Open a request stream on an established connection; (stream id, server side)."""
        self.pump()
        sid = self.quic.get_next_available_stream_id()
        self.h3.send_headers(sid, headers, end_stream=end_stream)
        self.pump()
        assert self.server is not None
        return sid, self.server


def test_request_response_roundtrip(endpoint: H3Endpoint) -> None:
    pair = Pair(endpoint)
    pair.pump()
    sid = pair.quic.get_next_available_stream_id()
    pair.h3.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"https"),
                               (b":authority", b"localhost"), (b":path", b"/echo?x=1")])
    pair.h3.send_data(sid, b"hello", end_stream=True)
    pair.pump()
    opened = [e for e in pair.server_events if isinstance(e, RequestOpened)]
    assert opened == [RequestOpened(sid, b"POST", b"/echo?x=1", [(b"host", b"localhost")],
                                    False)]
    body = [e for e in pair.server_events if isinstance(e, BodyData)]
    assert b"".join(e.data for e in body) == b"hello" and body[-1].end_stream
    assert pair.server is not None
    pair.server.send_head(sid, 200, [(b"content-type", b"text/plain")], False)
    pair.server.send_data(sid, b"world", True)
    pair.pump()
    heads = [e for e in pair.client_events if isinstance(e, HeadersReceived)]
    assert heads and (b":status", b"200") in heads[0].headers
    data = b"".join(e.data for e in pair.client_events if isinstance(e, DataReceived))
    assert data == b"world"


def test_connection_ids_route_to_one_connection(endpoint: H3Endpoint) -> None:
    pair = Pair(endpoint)
    pair.pump()
    assert pair.server is not None
    assert len(endpoint.live) == 1
    # Every CID the server issued maps to the same connection.
    assert {id(c) for c in endpoint.connections.values()} == {id(pair.server)}
    assert len(endpoint.connections) >= 2


def test_garbage_and_short_initials_create_nothing(endpoint: H3Endpoint) -> None:
    for size in (0, 1, 5, 40, 1300):
        _conn, events = endpoint.receive(os.urandom(size), CLIENT, 1.0)
        assert events == []
    # A long-header Initial (version 1) too short to be a client's first flight: dropped.
    short_initial = bytes([0xC0]) + (1).to_bytes(4, "big") + b"\x08" + os.urandom(8) + b"\x00"
    assert endpoint.receive(short_initial + os.urandom(100), CLIENT, 1.0) == (None, [])
    assert not endpoint.live


def test_unknown_version_gets_version_negotiation(endpoint: H3Endpoint) -> None:
    packet = (bytes([0xC0]) + (0x1A2A3A4A).to_bytes(4, "big") + b"\x08" + b"d" * 8
              + b"\x08" + b"s" * 8 + bytes(1200))
    assert endpoint.receive(packet, CLIENT, 1.0) == (None, [])
    replies = endpoint.take_replies()
    assert len(replies) == 1 and replies[0][1] == CLIENT
    assert replies[0][0][1:5] == b"\x00\x00\x00\x00"  # version 0: Version Negotiation


def test_max_connections_refuses_new_ones(endpoint: H3Endpoint) -> None:
    pairs = [Pair(endpoint, ("127.0.0.1", 50000 + i)) for i in range(3)]
    for pair in pairs:
        pair.pump()
    assert len(endpoint.live) == 2
    assert pairs[2].server is None


def test_goaway_and_close_end_the_connection(endpoint: H3Endpoint) -> None:
    pair = Pair(endpoint)
    pair.pump()
    assert pair.server is not None
    pair.server.send_goaway()
    pair.server.close()
    pair.pump()
    events = pair.server.handle_timer(pair.now + 10)  # the closing period ends
    assert pair.server.ended
    assert any(isinstance(e, ConnectionEnded) for e in events)
    assert pair.server.handle_timer(pair.now + 20) == []
    endpoint.track(pair.server)
    assert not endpoint.live


def test_initial_with_garbage_payload_keeps_no_state(endpoint: H3Endpoint) -> None:
    for _ in range(50):
        packet = (bytes([0xC3]) + (1).to_bytes(4, "big") + b"\x08" + os.urandom(8) + b"\x08"
                  + os.urandom(8) + b"\x00" + b"\x44\xd0" + os.urandom(1240))
        assert endpoint.receive(packet, CLIENT, 1.0) == (None, [])
    assert not endpoint.live and not endpoint.connections
    pair = Pair(endpoint)  # and a real client still gets in
    pair.pump()
    assert pair.server is not None and pair.server.h3 is not None


def body_received(pair: Pair) -> int:
    return sum(len(e.data) for e in pair.server_events if isinstance(e, BodyData))


# -- what devserve.protocols.aioquic_internals reaches into, checked on the wire ---------------
def test_max_streams_is_what_the_client_may_open(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    pair = Pair(make_endpoint(tmp_path_factory, max_streams=2))
    pair.pump()
    for n in range(3):
        sid = pair.quic.get_next_available_stream_id()
        pair.h3.send_headers(sid, request(b"/%d" % n), end_stream=True)
    pair.pump()
    opened = [e.stream_id for e in pair.server_events if isinstance(e, RequestOpened)]
    assert opened == [0, 4], "the third request waits for MAX_STREAMS credit"


def test_send_backlog_counts_unacknowledged_response_bytes(endpoint: H3Endpoint) -> None:
    pair = Pair(endpoint)
    sid, server = pair.request(request(b"/"))
    assert server.send_backlog(sid) == 0
    server.send_head(sid, 200, [], False)
    server.send_data(sid, b"x" * 100_000, True)
    assert server.send_backlog(sid) >= 100_000
    pair.pump(50)
    assert server.send_backlog(sid) == 0
    assert server.send_backlog(404) == 0  # a stream aioquic does not know


def test_paused_stream_gets_no_more_credit_until_resumed(endpoint: H3Endpoint) -> None:
    pair = Pair(endpoint)
    sid, server = pair.request(request(b"/upload", b"POST"), end_stream=False)
    server.pause_stream(sid)
    pair.h3.send_data(sid, b"y" * 1_000_000, end_stream=True)
    pair.pump(200)
    assert 0 < body_received(pair) <= MAX_STREAM_DATA
    server.resume_stream(sid)
    pair.pump(400)
    assert body_received(pair) == 1_000_000


def test_goaway_goes_out_on_the_control_stream(endpoint: H3Endpoint) -> None:
    pair = Pair(endpoint)
    sid, server = pair.request(request(b"/"))
    server.send_goaway()
    pair.pump()
    goaway = encode_frame(FrameType.GOAWAY, encode_uint_var(sid + 4))  # sid itself may finish
    assert any(data.endswith(goaway) for data in pair.uni_data.values())


def test_reset_and_stop_of_streams_aioquic_no_longer_knows_are_quiet(
        endpoint: H3Endpoint) -> None:
    pair = Pair(endpoint)
    sid, server = pair.request(request(b"/"))
    server.send_head(sid, 200, [(b"content-length", b"0")], True)
    pair.pump()
    server.reset(sid)  # finished both ways
    server.stop_reading(sid)
    server.reset(400)  # never opened
    pair.pump()
    assert not server.ended
