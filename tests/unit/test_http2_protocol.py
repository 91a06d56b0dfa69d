"""The sans-IO HTTP/2 adapter, fed the real bytes of an h2 client connection (no sockets)."""

from __future__ import annotations

import base64

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame, RstStreamFrame

from devserve.protocols.http2 import (
    MAX_STREAM_ID,
    BodyData,
    BodyEnd,
    ConnectionEnded,
    DrainAcked,
    H2Server,
    RequestOpened,
    SettingsChanged,
    StreamReset,
    WindowOpened,
)
from devserve.protocols.http2_fields import (
    MalformedRequest,
    parse_request_headers,
    response_headers,
)

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"example.test"),
       (b":path", b"/p?q=1")]


def make_client(*, validate: bool = True) -> h2.connection.H2Connection:
    config = h2.config.H2Configuration(
        client_side=True, header_encoding=None,
        validate_outbound_headers=validate, normalize_outbound_headers=validate,
    )
    client = h2.connection.H2Connection(config=config)
    client.initiate_connection()
    return client


def pair(**kwargs: object) -> tuple[H2Server, h2.connection.H2Connection, list[object]]:
    """A server that has processed the client preface, and the client that got the settings."""
    server = H2Server(**kwargs)  # type: ignore[arg-type]
    server.initiate()
    client = make_client()
    events = server.receive(client.data_to_send(), now=0.0)
    client_events = client.receive_data(server.data_to_send())
    server.receive(client.data_to_send(), now=0.0)  # the SETTINGS ACK
    return server, client, [*events, *client_events]


def client_send(client: h2.connection.H2Connection, sid: int, data: bytes) -> None:
    for i in range(0, len(data), 16384):
        client.send_data(sid, data[i:i + 16384])


def to_server(server: H2Server, client: h2.connection.H2Connection, now: float = 0.0) -> list:
    return server.receive(client.data_to_send(), now)


def to_client(server: H2Server, client: h2.connection.H2Connection) -> list:
    return client.receive_data(server.data_to_send())


def frames(data: bytes) -> list[Frame]:
    """Parse raw frames (the h2 *client* refuses frames after a GOAWAY; RFC 9113 allows them)."""
    out: list[Frame] = []
    view = memoryview(data)
    while view:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9:9 + length])
        out.append(frame)
        view = view[9 + length:]
    return out


# -- requests ----------------------------------------------------------------------------------
def test_settings_advertise_the_limits() -> None:
    _, client, events = pair(max_concurrent_streams=7, max_header_list_size=4096)
    changed = next(e for e in events if isinstance(e, h2.events.RemoteSettingsChanged))
    codes = h2.settings.SettingCodes
    assert changed.changed_settings[codes.MAX_CONCURRENT_STREAMS].new_value == 7
    assert changed.changed_settings[codes.MAX_HEADER_LIST_SIZE].new_value == 4096
    # The connection window covers every stream's window, so one slow stream cannot stall all.
    assert client.outbound_flow_control_window == 7 * 65535


def test_get_request_becomes_request_opened_and_response_goes_back() -> None:
    server, client, _ = pair()
    client.send_headers(1, [*GET, (b"accept", b"*/*")], end_stream=True)
    events = to_server(server, client)
    assert events == [
        RequestOpened(1, b"GET", b"/p?q=1", [(b"host", b"example.test"), (b"accept", b"*/*")],
                      end_stream=True, expects_continue=False),
        BodyEnd(1),
    ]
    server.send_head(1, 200, [(b"content-type", b"text/plain"), (b"connection", b"close"),
                              (b"transfer-encoding", b"chunked")], end_stream=False)
    assert server.send_data(1, b"hello", end_stream=True) == 5
    got = to_client(server, client)
    response = next(e for e in got if isinstance(e, h2.events.ResponseReceived))
    assert response.headers == [(b":status", b"200"), (b"content-type", b"text/plain")]
    assert [e.data for e in got if isinstance(e, h2.events.DataReceived)] == [b"hello"]
    assert any(isinstance(e, h2.events.StreamEnded) for e in got)


def test_body_data_and_flow_control_credit_only_on_ack() -> None:
    server, client, _ = pair()
    client.send_headers(1, [(b":method", b"POST"), *GET[1:]])
    body = b"x" * 100_000
    sendable = client.local_flow_control_window(1)
    assert sendable == 65535  # the default stream window
    client_send(client, 1, body[:sendable])
    events = to_server(server, client)
    data = [e for e in events if isinstance(e, BodyData)]
    assert sum(len(e.data) for e in data) == 65535
    assert sum(e.flow_length for e in data) == 65535
    # Nothing was acknowledged: the client stays blocked however long the app takes.
    to_client(server, client)
    assert client.local_flow_control_window(1) == 0
    server.ack(1, 65535)
    to_client(server, client)
    assert client.local_flow_control_window(1) == 65535


def test_expect_continue_is_reported_and_100_can_be_sent() -> None:
    server, client, _ = pair()
    client.send_headers(1, [(b":method", b"PUT"), *GET[1:], (b"expect", b"100-continue")])
    opened = to_server(server, client)[0]
    assert isinstance(opened, RequestOpened) and opened.expects_continue
    server.send_continue(1)
    got = to_client(server, client)
    assert any(isinstance(e, h2.events.InformationalResponseReceived) for e in got)


def test_trailers_reach_the_client() -> None:
    server, client, _ = pair()
    client.send_headers(1, GET, end_stream=True)
    to_server(server, client)
    server.send_head(1, 200, [(b"trailer", b"x-checksum")], end_stream=False)
    server.send_data(1, b"body", end_stream=False)
    server.send_trailers(1, [(b"x-checksum", b"abc"), (b"connection", b"close")])
    got = to_client(server, client)
    trailers = next(e for e in got if isinstance(e, h2.events.TrailersReceived))
    assert trailers.headers == [(b"x-checksum", b"abc")]
    assert trailers.stream_ended is not None


def test_send_data_respects_the_client_window_and_frame_size() -> None:
    server, client, _ = pair()
    client.send_headers(1, GET, end_stream=True)
    to_server(server, client)
    server.send_head(1, 200, [], end_stream=False)
    big = b"y" * 100_000
    sent = server.send_data(1, big, end_stream=True)
    assert sent == 65535  # the client's initial stream window
    out = frames(server.data_to_send())
    data_frames = [f for f in out if isinstance(f, DataFrame)]
    assert all(len(f.data) <= 16384 for f in data_frames)
    assert not any("END_STREAM" in f.flags for f in data_frames)  # more remains
    client.receive_data(b"".join(f.serialize() for f in out))
    client.acknowledge_received_data(65535, 1)
    assert WindowOpened(1) in to_server(server, client)
    assert server.send_data(1, big[sent:], end_stream=True) == 100_000 - 65535
    got = to_client(server, client)
    assert any(isinstance(e, h2.events.StreamEnded) for e in got)


def test_client_settings_change_is_reported() -> None:
    server, client, _ = pair()
    codes = h2.settings.SettingCodes
    client.update_settings({codes.INITIAL_WINDOW_SIZE: 1 << 20})
    events = to_server(server, client)
    assert SettingsChanged({int(codes.INITIAL_WINDOW_SIZE): 1 << 20}) in events
    client.send_headers(1, GET, end_stream=True)
    to_server(server, client)
    assert server.window(1) == min(1 << 20, 65535)  # the connection window still caps it


def test_client_reset_is_reported() -> None:
    server, client, _ = pair()
    client.send_headers(1, GET)
    to_server(server, client)
    client.reset_stream(1, ErrorCodes.CANCEL)
    assert to_server(server, client) == [StreamReset(1, int(ErrorCodes.CANCEL))]


def test_request_opened_and_reset_in_one_read_never_surfaces() -> None:
    server, client, _ = pair()
    client.send_headers(1, GET)
    client.reset_stream(1, ErrorCodes.CANCEL)
    assert to_server(server, client) == []


# -- malformed requests are stream errors ------------------------------------------------------
@pytest.mark.parametrize("headers", [
    [*GET, (b"X-Upper", b"1")],  # uppercase field name
    [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a")],  # no :path
    [*GET, (b"connection", b"keep-alive")],  # connection-specific
    [*GET, (b"transfer-encoding", b"chunked")],
    [*GET, (b"te", b"gzip")],
    [(b":method", b"GET"), (b"accept", b"*/*"), (b":scheme", b"http"), (b":path", b"/")],
    [*GET, (b":protocol", b"websocket")],  # unknown pseudo-header (no extended CONNECT)
    [*GET, (b":path", b"/again")],  # duplicate
    [*GET, (b"host", b"other.test")],  # host differs from :authority
    [*GET, (b"x-bad", b" padded")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"relative")],
])
def test_malformed_request_resets_only_its_stream(headers: list[tuple[bytes, bytes]]) -> None:
    client = make_client(validate=False)  # a client that sends what it is told
    server = H2Server()
    server.initiate()
    server.receive(client.data_to_send(), 0.0)
    client.receive_data(server.data_to_send())
    client.send_headers(1, headers, end_stream=True)
    client.send_headers(3, GET, end_stream=True)
    events = to_server(server, client)
    assert [type(e) for e in events] == [RequestOpened, BodyEnd]
    assert events[0].stream_id == 3  # type: ignore[union-attr]
    out = frames(server.data_to_send())
    resets = [f for f in out if isinstance(f, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in resets] == [(1, ErrorCodes.PROTOCOL_ERROR)]
    assert not any(isinstance(f, GoAwayFrame) for f in out)


def test_parse_request_headers_puts_host_first() -> None:
    method, target, headers = parse_request_headers(
        [(b":method", b"POST"), (b":path", b"/x"), (b":scheme", b"https"),
         (b":authority", b"h:1"), (b"a", b"1"), (b"cookie", b"c=1; d=2"), (b"te", b"trailers")])
    assert (method, target) == (b"POST", b"/x")
    assert headers == [(b"host", b"h:1"), (b"a", b"1"), (b"cookie", b"c=1; d=2"),
                       (b"te", b"trailers")]
    assert parse_request_headers([(b":method", b"OPTIONS"), (b":scheme", b"http"),
                                  (b":path", b"*")])[1] == b"*"
    with pytest.raises(MalformedRequest):
        parse_request_headers([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"*")])
    assert parse_request_headers([(b":method", b"CONNECT"), (b":authority", b"h:443")])[1] == \
        b"h:443"


def test_response_headers_drop_what_http2_forbids() -> None:
    assert response_headers(204, [(b"upgrade", b"x"), (b"keep-alive", b"5"), (b":x", b"1"),
                                  (b"te", b"gzip"), (b"a", b"b")]) == [
        (b":status", b"204"), (b"a", b"b")]
    with pytest.raises(ValueError):
        response_headers(200, [(b"a", b"x\r\ny: z")])


def test_request_trailers_with_pseudo_headers_reset_the_stream() -> None:
    client2 = make_client(validate=False)
    server = H2Server()
    server.initiate()
    server.receive(client2.data_to_send(), 0.0)
    client2.receive_data(server.data_to_send())
    client2.send_headers(1, [(b":method", b"POST"), *GET[1:]])
    client2.send_data(1, b"abc")
    client2.send_headers(1, [(b":path", b"/late")], end_stream=True)
    events = to_server(server, client2)
    assert events[0] == RequestOpened(1, b"POST", b"/p?q=1", [(b"host", b"example.test")],
                                      False, False)
    assert BodyData(1, b"abc", 3) in events
    assert events[-1] == StreamReset(1, int(ErrorCodes.PROTOCOL_ERROR))
    assert BodyEnd(1) not in events


# -- connection-level protection ---------------------------------------------------------------
def test_rapid_reset_flood_ends_the_connection_with_enhance_your_calm() -> None:
    server, client, _ = pair(max_concurrent_streams=1000, rapid_reset_limit=50,
                             rapid_reset_window=10.0)
    for i in range(100):
        sid = 1 + 2 * i
        client.send_headers(sid, GET, end_stream=True)
        client.reset_stream(sid, ErrorCodes.CANCEL)
    events = to_server(server, client, now=5.0)
    assert events == [ConnectionEnded(int(ErrorCodes.ENHANCE_YOUR_CALM), False, "rapid reset")]
    got = to_client(server, client)
    ended = next(e for e in got if isinstance(e, h2.events.ConnectionTerminated))
    assert ended.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert server.receive(b"anything", 6.0) == []  # nothing more is processed


def test_resets_spread_over_time_stay_under_the_limit() -> None:
    server, client, _ = pair(rapid_reset_limit=10, rapid_reset_window=1.0)
    sid = 1
    for second in range(30):  # 5 resets a second: never more than 10 in any 1 s window
        for _ in range(5):
            client.send_headers(sid, GET)
            to_server(server, client, now=float(second))
            client.reset_stream(sid, ErrorCodes.CANCEL)
            events = to_server(server, client, now=second + 0.1)
            assert events == [StreamReset(sid, int(ErrorCodes.CANCEL))]
            sid += 2
    assert not server.ended


def test_oversized_header_list_is_a_connection_error_not_a_crash() -> None:
    server, client, _ = pair(max_header_list_size=1024)
    client.send_headers(1, [*GET, (b"x-big", b"v" * 4000)], end_stream=True)
    events = to_server(server, client)
    assert len(events) == 1 and isinstance(events[0], ConnectionEnded)
    assert not events[0].by_peer
    assert any(isinstance(f, GoAwayFrame) for f in frames(server.data_to_send()))


def test_garbage_is_a_protocol_error_with_goaway() -> None:
    server = H2Server()
    server.initiate()
    server.data_to_send()
    events = server.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0.0)
    assert isinstance(events[0], ConnectionEnded)
    assert events[0].error_code == ErrorCodes.PROTOCOL_ERROR
    assert isinstance(frames(server.data_to_send())[-1], GoAwayFrame)


def test_client_goaway_ends_the_connection() -> None:
    server, client, _ = pair()
    client.close_connection()
    assert to_server(server, client) == [ConnectionEnded(0, True, "GOAWAY from the client")]


# -- draining ----------------------------------------------------------------------------------
def test_two_phase_goaway_lets_in_flight_streams_finish_and_refuses_new_ones() -> None:
    server, client, _ = pair()
    client.send_headers(1, GET, end_stream=True)
    to_server(server, client)
    server.start_drain()
    out = frames(server.data_to_send())
    first = [f for f in out if isinstance(f, GoAwayFrame)]
    assert [(f.last_stream_id, f.error_code) for f in first] == [(MAX_STREAM_ID, 0)]
    got = client.receive_data(b"".join(f.serialize() for f in first))
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in got)
    # h2 as a client stops after any GOAWAY; RFC 9113 §6.8 lets the exchange go on, so the
    # test reopens it to play a client whose HEADERS crossed the GOAWAY on the wire.
    client.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
    client.send_headers(3, GET, end_stream=True)
    client.ping(b"\0" * 8)  # not the drain ping: ignored
    events = to_server(server, client)
    assert [type(e) for e in events] == [RequestOpened, BodyEnd]
    # The drain PING is answered (h2 acks automatically) -> DrainAcked -> final GOAWAY(3).
    ack = [f for f in out if f.type == 0x6]  # PING
    assert ack
    client.receive_data(b"".join(f.serialize() for f in ack))
    assert DrainAcked() in to_server(server, client)
    server.finish_drain()
    final = [f for f in frames(server.data_to_send()) if isinstance(f, GoAwayFrame)]
    assert [(f.last_stream_id, f.error_code) for f in final] == [(3, 0)]
    # In-flight stream 1 still gets its response ...
    server.send_head(1, 200, [], end_stream=False)
    server.send_data(1, b"done", end_stream=True)
    out = frames(server.data_to_send())
    assert any(isinstance(f, HeadersFrame) and f.stream_id == 1 for f in out)
    assert any(isinstance(f, DataFrame) and f.data == b"done" for f in out)
    # ... and a stream opened after the final GOAWAY is refused, not surfaced.
    client.send_headers(5, GET, end_stream=True)
    assert to_server(server, client) == []
    refused = [f for f in frames(server.data_to_send()) if isinstance(f, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in refused] == [(5, ErrorCodes.REFUSED_STREAM)]


# -- h2c upgrade -------------------------------------------------------------------------------
def test_upgrade_opens_stream_one_half_closed() -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                  header_encoding=None))
    settings = client.initiate_upgrade_connection()
    client.data_to_send()
    assert isinstance(settings, bytes)
    server = H2Server()
    server.initiate(upgrade_settings=settings)
    assert server.last_stream_id == 1
    server.send_head(1, 200, [(b"content-length", b"2")], end_stream=False)
    server.send_data(1, b"ok", end_stream=True)
    got = client.receive_data(server.data_to_send())
    assert [e.data for e in got if isinstance(e, h2.events.DataReceived)] == [b"ok"]
    assert base64.urlsafe_b64decode(settings)  # what curl sends, padded
