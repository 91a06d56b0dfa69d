"""HTTP/2 keepalive PINGs (``--h2-ping-interval`` / ``--h2-ping-timeout``) and PING floods,
against the real server with the raw h2 client.

A client that stops answering PINGs behind a long-lived response is a dead peer: GOAWAY and
close. A client that answers stays connected as long as it likes. A flood of PINGs is answered
without the server's memory growing with what the client does not read.
"""

from __future__ import annotations

import json
import socket
import time

import h2.events
from apps.h2_client import RawH2Client
from apps.wsh2_client import H2WebSocketClient, SilentH2Client
from conftest import ServerFactory, ServerProcess
from hyperframe.frame import PingFrame

APP = "h2_app:app"
FAST_PING = ("--h2-ping-interval", "0.5", "--h2-ping-timeout", "0.5")


def serve(start_server: ServerFactory, *extra: str) -> ServerProcess:
    return start_server(APP, "--no-access-log", "--workers", "1", *extra)


def test_client_that_never_acks_gets_goaway(start_server: ServerFactory) -> None:
    server = serve(start_server, *FAST_PING)
    client = SilentH2Client(server.host, server.port)
    try:
        sid = client.request("/stream-forever")
        client.wait(lambda: bytes(client.responses[sid].body).startswith(b"tick"))
        started = time.monotonic()
        client.wait(lambda: bool(client.goaways), timeout=5)
        assert time.monotonic() - started < 3.0  # interval + timeout + sweep precision
        assert client.pings >= 1
        assert client.goaways[0].error_code == 0
        client.wait_closed(timeout=5)
    finally:
        client.close()


def test_client_that_acks_stays_connected(start_server: ServerFactory) -> None:
    server = serve(start_server, *FAST_PING)
    client = H2WebSocketClient(server.host, server.port)
    try:
        sid = client.request("/stream-forever")
        deadline = time.monotonic() + 2.5  # five intervals of watching the connection
        while time.monotonic() < deadline:
            assert client.read_once(0.1), "the server closed an answering client"
        assert client.pings >= 2 and not client.goaways
        assert not client.responses[sid].done
        assert client.get("/").status == 200
    finally:
        client.close()


def test_no_pings_when_disabled_or_idle(start_server: ServerFactory) -> None:
    """Interval 0 disables keepalive PINGs; an idle connection (no stream) is never PINGed."""
    server = serve(start_server, "--h2-ping-interval", "0", "--h2-ping-timeout", "0.5")
    client = H2WebSocketClient(server.host, server.port)
    try:
        sid = client.request("/stream-forever")
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert client.read_once(0.1)
        assert client.pings == 0 and not client.responses[sid].done
    finally:
        client.close()


def _rss(server: ServerProcess) -> int:
    client = RawH2Client(server.host, server.port)
    try:
        response = client.get("/rss")
        value: int = json.loads(bytes(response.body))["rss_kb"]
        return value
    finally:
        client.close()


def test_ping_flood_is_answered_and_unread_acks_stay_bounded(
        start_server: ServerFactory) -> None:
    server = serve(start_server)
    # Answered: 5000 PINGs in one write, 5000 ACKs back, and the connection still serves.
    client = RawH2Client(server.host, server.port)
    acks = 0

    def count(event: h2.events.Event) -> None:
        nonlocal acks
        if isinstance(event, h2.events.PingAckReceived):
            acks += 1
        RawH2Client._on_event(client, event)

    client._on_event = count  # type: ignore[method-assign]
    try:
        client.wait(lambda: bool(client.server_settings))
        client.sock.sendall(b"".join(
            PingFrame(0, opaque_data=i.to_bytes(8, "big")).serialize() for i in range(5000)))
        client.wait(lambda: acks == 5000, timeout=20)
        assert client.get("/").status == 200
    finally:
        client.close()
    # Unread: a client that floods and never reads stalls itself, not the server's memory.
    before = _rss(server)
    flood = socket.create_connection((server.host, server.port), timeout=10)
    try:
        flood.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        chunk = b"".join(PingFrame(0, opaque_data=b"floodxxx").serialize() for _ in range(4096))
        flood.settimeout(2.0)
        sent = 0
        try:
            while sent < 200 * 1024 * 1024:  # stops far earlier: the server stops reading,
                sent += flood.send(chunk)  # or cuts a flood it will never answer
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass
        assert sent < 200 * 1024 * 1024, "the server read 200 MB of PINGs it could not answer"
        grown = _rss(server) - before
        assert grown < 30 * 1024, f"worker RSS grew by {grown} kB under an unread PING flood"
    finally:
        flood.close()
