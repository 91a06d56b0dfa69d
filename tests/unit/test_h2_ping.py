"""The sans-IO HTTP/2 adapter's extended CONNECT (RFC 8441) and keepalive PING, fed the real
bytes of an h2 client connection (no sockets, no clock)."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from devserve.protocols.http2 import (
    H2Server,
    MalformedRequest,
    PingAcked,
    RequestOpened,
    StreamReset,
    parse_request_head,
)

WS_CONNECT = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"),
              (b":path", b"/chat?x=1"), (b":authority", b"example.com"),
              (b"sec-websocket-version", b"13")]


def pair(**kwargs: bool) -> tuple[H2Server, h2.connection.H2Connection, dict[int, int]]:
    """Server and client past the preface; the settings the client received."""
    server = H2Server(**kwargs)
    server.initiate()
    client = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None))
    client.initiate_connection()
    server.receive(client.data_to_send(), now=0.0)
    settings: dict[int, int] = {}
    for event in client.receive_data(server.data_to_send()):
        if isinstance(event, h2.events.RemoteSettingsChanged):
            settings.update({int(k): v.new_value for k, v in event.changed_settings.items()})
    server.receive(client.data_to_send(), now=0.0)
    return server, client, settings


def test_extended_connect_opens_a_websocket_stream_when_enabled() -> None:
    server, client, settings = pair(enable_connect_protocol=True)
    assert settings[SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
    client.send_headers(1, WS_CONNECT)
    events = server.receive(client.data_to_send(), now=0.0)
    assert events == [RequestOpened(1, b"CONNECT", b"/chat?x=1",
                                    [(b"host", b"example.com"), (b"sec-websocket-version", b"13")],
                                    False, False, b"websocket")]


def test_extended_connect_is_a_stream_error_when_not_advertised() -> None:
    server, client, settings = pair()
    assert SettingCodes.ENABLE_CONNECT_PROTOCOL not in settings
    client.send_headers(1, WS_CONNECT)
    assert server.receive(client.data_to_send(), now=0.0) == []
    resets = [e for e in client.receive_data(server.data_to_send())
              if isinstance(e, h2.events.StreamReset)]
    assert [(r.stream_id, r.error_code) for r in resets] == [(1, ErrorCodes.PROTOCOL_ERROR)]
    assert not server.ended


@pytest.mark.parametrize("drop", [b":scheme", b":path", b":authority"])
def test_extended_connect_needs_scheme_path_and_authority(drop: bytes) -> None:
    with pytest.raises(MalformedRequest):
        parse_request_head([h for h in WS_CONNECT if h[0] != drop], connect_protocol=True)


def test_protocol_only_with_connect() -> None:
    head = [(b":method", b"GET"), *WS_CONNECT[1:]]
    with pytest.raises(MalformedRequest):
        parse_request_head(head, connect_protocol=True)


def test_keepalive_ping_ack_surfaces_and_drain_ping_does_not_mix() -> None:
    server, client, _ = pair()
    server.ping(b"devsrvKA")
    client.receive_data(server.data_to_send())  # h2 queues the ACK itself
    assert server.receive(client.data_to_send(), now=1.0) == [PingAcked(b"devsrvKA")]
    client.send_headers(1, WS_CONNECT)  # unrelated stream errors leave PINGs alone
    events = server.receive(client.data_to_send(), now=1.0)
    assert not any(isinstance(e, StreamReset | PingAcked) for e in events)
