"""WebSocket over HTTP/2 (RFC 8441 extended CONNECT) against the real server.

The client is the raw h2 client plus wsproto's client frame layer (``tests/apps/wsh2_client.py``)
over h2c and over TLS (``--https`` dev certificate); the app is ``tests/apps/wsh2_app.py``
(``ws_app`` routes plus ``/scope`` and ``/ticks``). Plain HTTP/2 requests share the connection.
Every wait has a deadline.
"""

from __future__ import annotations

import json
import signal
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import h2.errors
import pytest
from apps.wsh2_client import ENABLE_CONNECT_PROTOCOL, H2WebSocketClient
from conftest import ServerFactory, ServerProcess
from wsproto.events import BytesMessage, CloseConnection, TextMessage

APP = "wsh2_app:app"
TRANSPORTS = ["h2c", "tls"]


def serve(start_server: ServerFactory, tmp_path: Path, transport: str,
          *extra: str) -> ServerProcess:
    if transport == "tls":
        return start_server(APP, "--https", "--no-access-log", "--workers", "1", *extra,
                            env={"DEVSERVE_CACHE_DIR": str(tmp_path)})
    return start_server(APP, "--no-access-log", "--workers", "1", *extra)


def connect(server: ServerProcess, tmp_path: Path) -> H2WebSocketClient:
    tls: ssl.SSLContext | None = None
    if server.scheme == "https":
        tls = ssl.create_default_context(cafile=str(tmp_path / "localhost-cert.pem"))
        tls.set_alpn_protocols(["h2"])
    return H2WebSocketClient("127.0.0.1", server.port, tls=tls)


@pytest.fixture
def h2ws(start_server: ServerFactory, tmp_path: Path,
         request: pytest.FixtureRequest) -> Iterator[tuple[ServerProcess, H2WebSocketClient]]:
    transport = getattr(request, "param", "h2c")
    server = serve(start_server, tmp_path, transport)
    client = connect(server, tmp_path)
    try:
        yield server, client
    finally:
        client.close()


def close_reply(client: H2WebSocketClient, sid: int) -> CloseConnection:
    """Read events until the server's close frame (messages before it are skipped)."""
    while True:
        event = client.ws_next(sid)
        if isinstance(event, CloseConnection):
            return event


def seen(client: H2WebSocketClient, key: str) -> list[dict[str, object]]:
    """The disconnects ws_app recorded, asked for over plain HTTP/2 on the same connection."""
    response = client.get(f"/seen?key={key}")
    assert response.status == 200
    result: list[dict[str, object]] = json.loads(bytes(response.body))
    return result


# -- the happy path, h2c and TLS ---------------------------------------------------------------
@pytest.mark.parametrize("h2ws", TRANSPORTS, indirect=True)
def test_echo_scope_subprotocol_and_client_close(
        h2ws: tuple[ServerProcess, H2WebSocketClient]) -> None:
    server, client = h2ws
    assert client.connect_protocol_enabled()
    sid = client.open_ws("/scope?a=1", subprotocols=("chat.v1",))
    assert client.accepted(sid) == 200
    headers = dict(client.responses[sid].headers)
    assert headers[b"x-scope"] == b"yes"
    event = client.ws_next(sid)
    assert isinstance(event, TextMessage)
    scope = json.loads(event.data)
    want_scheme = "wss" if server.scheme == "https" else "ws"
    assert scope == {"http_version": "2", "scheme": want_scheme, "path": "/scope",
                     "subprotocols": ["chat.v1"], "query_string": "a=1"}

    key = uuid.uuid4().hex
    echo = client.open_ws(f"/echo?key={key}", subprotocols=("chat.v0", "chat.v1"))
    assert client.accepted(echo) == 200
    assert dict(client.responses[echo].headers)[b"sec-websocket-protocol"] == b"chat.v1"
    plain = client.request("/seen?key=nobody")  # a plain request in between, same connection
    client.ws_send(echo, TextMessage(data="héllo"))
    client.ws_send(echo, BytesMessage(data=bytes(range(256)) * 300))
    first, second = client.ws_next(echo), client.ws_next(echo)
    assert isinstance(first, TextMessage) and first.data == "héllo"
    assert isinstance(second, BytesMessage) and bytes(second.data) == bytes(range(256)) * 300
    client.wait(lambda: client.responses[plain].done)
    assert client.responses[plain].status == 200 and bytes(client.responses[plain].body) == b"[]"

    client.ws_send(echo, CloseConnection(code=4000, reason="done"))
    reply = close_reply(client, echo)
    assert reply.code == 4000
    client.wait(lambda: client.responses[echo].done)  # the server ended the stream
    client.wait(lambda: seen(client, key) == [{"code": 4000, "reason": "done"}])
    assert not client.goaways and client.get("/").status == 200  # connection still in use


@pytest.mark.parametrize("h2ws", TRANSPORTS, indirect=True)
def test_server_close_code_and_reason(h2ws: tuple[ServerProcess, H2WebSocketClient]) -> None:
    _, client = h2ws
    key = uuid.uuid4().hex
    sid = client.open_ws(f"/close?code=4321&reason=bye&key={key}")
    assert client.accepted(sid) == 200
    event = client.ws_next(sid)
    assert isinstance(event, CloseConnection)
    assert (event.code, event.reason) == (4321, "bye")
    client.ws_send(sid, event.response(), end=True)
    client.wait(lambda: client.responses[sid].done)
    assert client.responses[sid].reset in (None, h2.errors.ErrorCodes.NO_ERROR)
    client.wait(lambda: seen(client, key) == [{"code": 4321, "reason": "bye"}])


def test_close_before_accept_is_403_and_denial_keeps_status_and_body(
        h2ws: tuple[ServerProcess, H2WebSocketClient]) -> None:
    _, client = h2ws
    sid = client.open_ws("/close-before-accept")
    client.wait(lambda: client.responses[sid].done)
    assert client.responses[sid].status == 403
    deny = client.open_ws("/deny")
    client.wait(lambda: client.responses[deny].done)
    response = client.responses[deny]
    assert response.status == 401
    assert dict(response.headers)[b"www-authenticate"] == b'Bearer realm="ws"'
    assert bytes(response.body) == b"denied: no token"
    assert client.get("/").status == 200


def test_permessage_deflate_over_h2(h2ws: tuple[ServerProcess, H2WebSocketClient]) -> None:
    _, client = h2ws
    sid = client.open_ws("/echo", deflate=True)
    assert client.accepted(sid) == 200
    answer = dict(client.responses[sid].headers)[b"sec-websocket-extensions"]
    assert answer.startswith(b"permessage-deflate")
    text = "compress me " * 5000
    client.ws_send(sid, TextMessage(data=text))
    event = client.ws_next(sid)
    assert isinstance(event, TextMessage) and event.data == text
    assert len(client.responses[sid].body) < len(text) // 10  # it did travel compressed


def test_oversized_message_closes_1009(start_server: ServerFactory, tmp_path: Path) -> None:
    server = serve(start_server, tmp_path, "h2c", "--ws-max-size", "1024")
    client = connect(server, tmp_path)
    try:
        key = uuid.uuid4().hex
        sid = client.open_ws(f"/echo?key={key}")
        assert client.accepted(sid) == 200
        client.ws_send(sid, BytesMessage(data=b"x" * 1000))
        assert isinstance(client.ws_next(sid), BytesMessage)
        client.ws_send(sid, BytesMessage(data=b"x" * 2000))
        assert close_reply(client, sid).code == 1009
        client.wait(lambda: seen(client, key) == [{"code": 1009, "reason": "message too big"}])
    finally:
        client.close()


# -- settings and refusal ----------------------------------------------------------------------
def test_ws_none_does_not_advertise_and_refuses_connect(start_server: ServerFactory,
                                                         tmp_path: Path) -> None:
    server = serve(start_server, tmp_path, "h2c", "--ws", "none")
    client = connect(server, tmp_path)
    try:
        assert not client.connect_protocol_enabled()
        assert ENABLE_CONNECT_PROTOCOL not in client.server_settings
        sid = client.open_ws("/echo", force=True)
        client.wait(lambda: client.responses[sid].done)
        assert client.responses[sid].reset == h2.errors.ErrorCodes.PROTOCOL_ERROR
        assert client.get("/").status == 200 and not client.goaways  # a stream error only
    finally:
        client.close()


# -- reload ------------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_reload_closes_the_stream_1012_while_plain_requests_finish(
        start_server: ServerFactory, tmp_path: Path, transport: str) -> None:
    server = serve(start_server, tmp_path, transport, "--reload-grace", "5")
    client = connect(server, tmp_path)
    try:
        sid = client.open_ws("/ticks")
        assert client.accepted(sid) == 200
        assert isinstance(client.ws_next(sid), TextMessage)
        slow = client.request("/seen?key=x")
        mark = len(server.lines)
        server.send_signal(signal.SIGHUP)
        event = close_reply(client, sid)
        assert event.code == 1012
        client.ws_send(sid, event.response(), end=True)
        client.wait(lambda: client.responses[slow].done)
        assert client.responses[slow].status == 200
        client.wait(lambda: client.responses[sid].done)
        client.wait_closed(timeout=10)  # drained: the old generation closes the connection
        assert client.goaways and client.goaways[0].error_code == 0
        server.wait_for(r"Reloaded: generation 2", 30, start=mark)
    finally:
        client.close()
    fresh = connect(server, tmp_path)
    try:
        sid = fresh.open_ws("/echo")
        assert fresh.accepted(sid) == 200
        fresh.ws_send(sid, TextMessage(data="again"))
        event = fresh.ws_next(sid)
        assert isinstance(event, TextMessage) and event.data == "again"
    finally:
        fresh.close()


def test_shutdown_closes_the_stream_1001(start_server: ServerFactory, tmp_path: Path) -> None:
    server = serve(start_server, tmp_path, "h2c")
    client = connect(server, tmp_path)
    try:
        sid = client.open_ws("/ticks")
        assert client.accepted(sid) == 200
        assert isinstance(client.ws_next(sid), TextMessage)
        server.send_signal(signal.SIGTERM)
        event = close_reply(client, sid)
        assert event.code == 1001
        client.ws_send(sid, event.response(), end=True)
        client.wait_closed(timeout=10)
        assert server.wait_exit(20) == 0
    finally:
        client.close()
