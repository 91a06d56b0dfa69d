"""WebSocket behaviour of the real server, seen by real clients.

Clients: the ``websockets`` library (sync client, and its asyncio client for concurrency)
against the FastAPI example's ``/ws`` endpoint and the plain ASGI app ``tests/apps/ws_app.py``;
a hand-written raw-socket client (``tests/apps/ws_raw.py``) for what no library sends (unmasked
frames, reserved opcodes, a client that never answers pings, broken handshakes); and h11 in
client mode to parse HTTP answers to upgrade requests. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import h11
import httpx
import pytest
from apps.ws_app import BAD_HEADERS
from apps.ws_raw import BINARY, CLOSE, PING, PONG, TEXT, RawWebSocket, frame
from conftest import ROOT, ServerFactory, ServerProcess, wait_until
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Response
from websockets.sync.client import ClientConnection, connect

TIMEOUT = 10.0
EXAMPLES = ROOT / "examples"
MB = 1024 * 1024


# --- helpers ------------------------------------------------------------------------------------


def module_server(tmp_path_factory: pytest.TempPathFactory, *args: str) -> Iterator[ServerProcess]:
    """One server for a whole module, stopped (SIGTERM) at teardown."""
    server = ServerProcess([*args, "--port", "0", "--no-access-log"],
                           tmp_path_factory.mktemp("server"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def ws_url(server: ServerProcess, path: str) -> str:
    return f"ws://{server.host}:{server.port}{path}"


def open_ws(server: ServerProcess, path: str, **kw: Any) -> ClientConnection:
    kw.setdefault("open_timeout", TIMEOUT)
    kw.setdefault("close_timeout", TIMEOUT)
    kw.setdefault("ping_interval", None)
    kw.setdefault("max_size", 4 * MB)
    return connect(ws_url(server, path), **kw)


def closed_by_server(ws: ClientConnection, timeout: float = TIMEOUT) -> ConnectionClosed:
    """Wait until the server closes *ws*; the exception carries the close frame received."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"server did not close the websocket within {timeout}s")
        try:
            ws.recv(timeout=remaining)
        except ConnectionClosed as exc:
            return exc
        except TimeoutError:
            continue


def assert_still_serving(server: ServerProcess) -> None:
    """After a rejected or failed WebSocket the server must still echo on a new one."""
    with open_ws(server, "/echo") as ws:
        ws.send("still serving?")
        assert ws.recv(timeout=TIMEOUT) == "still serving?"
    assert server.proc.poll() is None, server.output


def rejected(server: ServerProcess, path: str, **kw: Any) -> Response:
    """The HTTP response to a websockets-client handshake the server must refuse."""
    try:
        with open_ws(server, path, **kw):
            pass
    except InvalidStatus as exc:
        return exc.response
    raise AssertionError(f"the handshake to {path} succeeded")


def upgrade_request(server: ServerProcess, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send a valid upgrade request and parse the HTTP answer with h11 (status, headers,
    body). A 101 returns at once with an empty body."""
    conn = h11.Connection(h11.CLIENT)
    key = base64.b64encode(os.urandom(16))
    request = h11.Request(method="GET", target=path, headers=[
        (b"host", f"{server.host}:{server.port}".encode()), (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"), (b"sec-websocket-key", key),
        (b"sec-websocket-version", b"13")])
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(conn.send(request) + conn.send(h11.EndOfMessage()))
        status = 0
        headers: dict[bytes, bytes] = {}
        body = b""
        deadline = time.monotonic() + TIMEOUT
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"incomplete answer: status {status}, body {body!r}"
                sock.settimeout(remaining)
                conn.receive_data(sock.recv(65536))
                continue
            if isinstance(event, h11.InformationalResponse | h11.Response):
                status = event.status_code
                headers = {bytes(k): bytes(v) for k, v in event.headers}
                if status == 101:
                    return status, headers, b""
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, headers, body


def wait_seen(server: ServerProcess, key: str, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """Poll the app's record of the websocket.disconnect messages it received under *key*."""
    def seen() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = httpx.get(f"{server.url}/seen", params={"key": key},
                                                timeout=TIMEOUT).json()
        return found

    return wait_until(seen, timeout, f"a websocket.disconnect recorded under {key!r}",
                      interval=0.02)


# --- servers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fastapi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, "fastapi_app:app", "--app-dir", str(EXAMPLES),
                             "--workers", "1")


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, "ws_app:app", "--workers", "1")


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, "ws_app:app", "--workers", "1",
                             "--ws-max-size", "1024")


@pytest.fixture(scope="module")
def ping_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, "ws_app:app", "--workers", "1",
                             "--ws-ping-interval", "0.5", "--ws-ping-timeout", "0.5")


# --- the FastAPI example ------------------------------------------------------------------------


def test_fastapi_echo_text(fastapi_server: ServerProcess) -> None:
    with open_ws(fastapi_server, "/ws") as ws:
        for text in ["hello", "", "héllo ☃ — 𝄞", "x" * 70_000]:
            ws.send(text)
            assert ws.recv(timeout=TIMEOUT) == text


def test_fastapi_one_megabyte_message(fastapi_server: ServerProcess) -> None:
    text = "".join(chr(0x41 + i % 26) for i in range(MB))
    with open_ws(fastapi_server, "/ws", compression=None) as ws:
        ws.send(text)
        assert ws.recv(timeout=TIMEOUT) == text
        ws.send(text[::-1])  # a second one on the same connection
        assert ws.recv(timeout=TIMEOUT) == text[::-1]


def test_fastapi_hundred_concurrent_sockets(fastapi_server: ServerProcess) -> None:
    url = ws_url(fastapi_server, "/ws")

    async def scenario() -> list[list[str]]:
        sockets = await asyncio.gather(*(
            async_connect(url, open_timeout=TIMEOUT, ping_interval=None) for _ in range(100)))
        try:
            async def talk(i: int, ws: Any) -> list[str]:
                got = []
                for n in range(5):
                    await ws.send(f"client {i} message {n}")
                    got.append(await asyncio.wait_for(ws.recv(), TIMEOUT))
                return got

            # All 100 are open at once before any of them talks.
            assert all(ws.state.name == "OPEN" for ws in sockets)
            return await asyncio.gather(*(talk(i, ws) for i, ws in enumerate(sockets)))
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    results = asyncio.run(asyncio.wait_for(scenario(), 60))
    for i, got in enumerate(results):
        assert got == [f"client {i} message {n}" for n in range(5)]


def test_permessage_deflate_negotiated_when_offered(fastapi_server: ServerProcess) -> None:
    with open_ws(fastapi_server, "/ws") as ws:  # websockets offers permessage-deflate
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert "permessage-deflate" in extensions
        text = "compress me " * 20_000
        ws.send(text)
        assert ws.recv(timeout=TIMEOUT) == text


def test_permessage_deflate_not_negotiated_when_not_offered(
        fastapi_server: ServerProcess) -> None:
    with open_ws(fastapi_server, "/ws", compression=None) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv(timeout=TIMEOUT) == "plain"


def test_permessage_deflate_disabled_by_flag(start_server: ServerFactory) -> None:
    server = start_server("fastapi_app:app", "--app-dir", str(EXAMPLES), "--workers", "1",
                          "--no-ws-per-message-deflate")
    with open_ws(server, "/ws") as ws:  # offered by the client, refused by the server
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        text = "not compressed " * 1000
        ws.send(text)
        assert ws.recv(timeout=TIMEOUT) == text


# --- the ASGI test app: bytes, subprotocols, close codes ---------------------------------------


def test_echo_bytes(app_server: ServerProcess) -> None:
    with open_ws(app_server, "/echo") as ws:
        for data in [b"", bytes(range(256)), os.urandom(70_000), os.urandom(MB)]:
            ws.send(data)
            got = ws.recv(timeout=TIMEOUT)
            assert isinstance(got, bytes)
            assert got == data
        ws.send("text stays text")
        assert ws.recv(timeout=TIMEOUT) == "text stays text"


@pytest.mark.parametrize(("offered", "chosen"), [
    (["unknown", "chat.v1", "chat.v2"], "chat.v1"),
    (["chat.v2"], "chat.v2"),
    (["mqtt", "wamp"], None),
    (None, None),
])
def test_subprotocol_negotiation(app_server: ServerProcess, offered: list[str] | None,
                                 chosen: str | None) -> None:
    with open_ws(app_server, "/echo", subprotocols=offered) as ws:
        assert ws.subprotocol == chosen
        assert ws.response.headers.get("Sec-WebSocket-Protocol") == chosen
        ws.send("ok")
        assert ws.recv(timeout=TIMEOUT) == "ok"


def test_app_closes_with_code_and_reason(app_server: ServerProcess) -> None:
    key = uuid.uuid4().hex
    with open_ws(app_server, f"/close?code=4001&reason=go+away+%E2%9C%8B&key={key}") as ws:
        exc = closed_by_server(ws)
    assert exc.rcvd is not None
    assert (exc.rcvd.code, exc.rcvd.reason) == (4001, "go away ✋")
    # The app then sees the client's close reply as its disconnect.
    assert [s["code"] for s in wait_seen(app_server, key)] == [4001]


def test_client_close_1000_reaches_app(app_server: ServerProcess) -> None:
    key = uuid.uuid4().hex
    with open_ws(app_server, f"/echo?key={key}") as ws:
        ws.send("before close")
        assert ws.recv(timeout=TIMEOUT) == "before close"
        ws.close(1000, "bye")
        rcvd = ws.protocol.close_rcvd
        assert rcvd is not None and rcvd.code == 1000  # the server echoed the close
    assert wait_seen(app_server, key) == [{"code": 1000, "reason": "bye"}]


# --- rejection paths ----------------------------------------------------------------------------


def test_close_before_accept_is_http_403(app_server: ServerProcess) -> None:
    response = rejected(app_server, "/close-before-accept")
    assert response.status_code == 403
    status, _, _ = upgrade_request(app_server, "/close-before-accept")
    assert status == 403
    assert_still_serving(app_server)


def test_exception_before_accept_is_http_500(app_server: ServerProcess) -> None:
    response = rejected(app_server, "/raise-before-accept")
    assert response.status_code == 500
    app_server.wait_for("failing before accept")  # the traceback is logged
    assert_still_serving(app_server)


def test_exception_after_accept_closes_1011(app_server: ServerProcess) -> None:
    with open_ws(app_server, "/raise-after-accept") as ws:
        ws.send("boom")
        exc = closed_by_server(ws)
    assert exc.rcvd is not None and exc.rcvd.code == 1011
    app_server.wait_for("failing after accept")
    assert_still_serving(app_server)


@pytest.mark.parametrize("case", [*BAD_HEADERS, "subprotocol"])
def test_invalid_accept_is_not_upgraded(app_server: ServerProcess, case: str) -> None:
    """Header names/values a response must not carry (CR/LF injection, NUL, non-token names),
    or a subprotocol the client never offered: no 101 goes out with them."""
    status, headers, _ = upgrade_request(app_server, f"/bad-accept?case={case}")
    assert status == 500, (status, headers)
    assert b"set-cookie" not in headers and b"x-evil" not in headers
    response = rejected(app_server, f"/bad-accept?case={case}", subprotocols=["chat.v1"])
    assert response.status_code == 500
    assert_still_serving(app_server)


def test_http_denial_response(app_server: ServerProcess) -> None:
    status, headers, body = upgrade_request(app_server, "/deny")
    assert status == 401
    assert headers.get(b"www-authenticate") == b'Bearer realm="ws"'
    assert body == b"denied: no token"
    response = rejected(app_server, "/deny")
    assert response.status_code == 401
    assert response.body == b"denied: no token"
    assert_still_serving(app_server)


def test_exception_during_http_denial_ends_the_connection(app_server: ServerProcess) -> None:
    """The app starts a denial response and raises before finishing its body: the response
    cannot be completed, so the server must close the connection (the client sees an
    incomplete body and EOF) instead of leaving it open with no end in sight."""
    with RawWebSocket.connect(app_server.host, app_server.port, "/deny-then-raise",
                              timeout=TIMEOUT) as ws:
        assert ws.response.status == 401
        try:
            ws.wait_eof(timeout=3.0)
        except TimeoutError:
            pytest.fail("connection still open 3 s after the app failed mid-denial; received "
                        f"{ws.response.raw + ws.response.rest!r}")
    app_server.wait_for("failing during a denial response")
    assert_still_serving(app_server)


def test_ws_none_serves_upgrade_as_plain_http(start_server: ServerFactory) -> None:
    server = start_server("ws_app:app", "--workers", "1", "--ws", "none")
    status, headers, body = upgrade_request(server, "/echo")
    assert status == 200
    assert body == b"http GET /echo upgrade=websocket"
    assert b"sec-websocket-accept" not in headers
    response = rejected(server, "/echo")
    assert response.status_code == 200


@pytest.mark.parametrize(("headers", "key", "version"), [
    ([], "", "13"),  # no Sec-WebSocket-Key
    ([], None, "8"),  # a version the server does not speak (RFC 6455 §4.4: 426 + version)
    ([], None, None),  # no Sec-WebSocket-Version at all
], ids=["missing-key", "version-8", "missing-version"])
def test_broken_handshake_gets_an_http_error(app_server: ServerProcess, headers: list[Any],
                                             key: str | None, version: str | None) -> None:
    """An upgrade request wsproto refuses must be answered (4xx) and closed, not left hanging."""
    try:
        with RawWebSocket.connect(app_server.host, app_server.port, "/echo", headers=headers,
                                  key=key, version=version, timeout=3.0) as ws:
            status = ws.response.status
    except TimeoutError:
        pytest.fail("no HTTP answer within 3 s to an invalid upgrade request: the connection "
                    "hangs (expected 400, or 426 with Sec-WebSocket-Version for a bad version)")
    assert 400 <= status < 500
    assert_still_serving(app_server)


def test_oversize_message_closes_1009(small_server: ServerProcess) -> None:
    with open_ws(small_server, "/echo", compression=None) as ws:
        ws.send(b"a" * 1024)  # exactly the limit
        assert ws.recv(timeout=TIMEOUT) == b"a" * 1024
        ws.send(b"a" * 1025)
        exc = closed_by_server(ws)
    assert exc.rcvd is not None and exc.rcvd.code == 1009
    assert_still_serving(small_server)


def test_oversize_counts_inflated_size(small_server: ServerProcess) -> None:
    """A message that is small on the wire but large once inflated is still too big."""
    with open_ws(small_server, "/echo") as ws:
        assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
        ws.send("z" * 100_000)  # ~100 bytes compressed
        exc = closed_by_server(ws)
    assert exc.rcvd is not None and exc.rcvd.code == 1009


def test_oversize_fragmented_message_closes_1009(small_server: ServerProcess) -> None:
    """The limit is per message, not per frame: three 600-byte fragments exceed it."""
    with RawWebSocket.connect(small_server.host, small_server.port, "/echo") as ws:
        assert ws.response.status == 101
        ws.send(frame(BINARY, b"b" * 600, fin=False) + frame(0, b"b" * 600, fin=False))
        frames, close = ws.recv_until_close()
    assert frames == []
    assert close is not None and close.close_code == 1009


@pytest.mark.parametrize("bad", [
    frame(TEXT, b"unmasked", mask=False),
    frame(3, b"reserved data opcode"),
    frame(0xB, b"reserved control opcode"),
    frame(TEXT, b"rsv1 without an extension", rsv=4),
    frame(PING, b"p" * 126),
], ids=["unmasked", "opcode-3", "opcode-0xB", "rsv1", "ping-126-bytes"])
def test_invalid_frame_closes_1002(app_server: ServerProcess, bad: bytes) -> None:
    with RawWebSocket.connect(app_server.host, app_server.port, "/echo") as ws:
        assert ws.response.status == 101
        ws.send_frame(TEXT, b"valid first")
        first = ws.recv_frame()
        assert first is not None and (first.opcode, first.payload) == (TEXT, b"valid first")
        ws.send(bad)
        frames, close = ws.recv_until_close()
        assert frames == []
        assert close is not None, "TCP closed without a close frame"
        assert close.close_code == 1002
        ws.wait_eof()  # then the server closes the TCP connection
    assert_still_serving(app_server)


def test_invalid_utf8_text_closes_1007(app_server: ServerProcess) -> None:
    with RawWebSocket.connect(app_server.host, app_server.port, "/echo") as ws:
        ws.send_frame(TEXT, b"caf\xc3")  # truncated two-byte sequence
        frames, close = ws.recv_until_close()
    assert frames == []
    assert close is not None and close.close_code == 1007


# --- pings --------------------------------------------------------------------------------------


def test_ping_timeout_closes_silent_client_and_keeps_normal_ones(
        ping_server: ServerProcess) -> None:
    """``--ws-ping-interval 0.5 --ws-ping-timeout 0.5``: a raw client that never answers gets
    close 1011 within a deadline; a raw client that answers, and a websockets client (which
    answers pings itself), both stay connected and keep talking meanwhile."""
    results: dict[str, Any] = {}
    errors: list[BaseException] = []
    observe_for = 3.0  # six ping intervals

    def silent() -> None:
        with RawWebSocket.connect(ping_server.host, ping_server.port, "/hold") as ws:
            started = time.monotonic()
            frames, close = ws.recv_until_close(timeout=5.0)
            results["silent"] = (frames, close, time.monotonic() - started)

    def answering() -> None:
        pings = 0
        with RawWebSocket.connect(ping_server.host, ping_server.port, "/echo") as ws:
            end = time.monotonic() + observe_for
            while (remaining := end - time.monotonic()) > 0:
                try:
                    got = ws.recv_frame(timeout=remaining)
                except TimeoutError:
                    break
                assert got is not None and got.opcode != CLOSE, got
                if got.opcode == PING:
                    pings += 1
                    ws.send_frame(PONG, got.payload)
            ws.send_frame(TEXT, b"still here")
            echo = ws.recv_frame()
            while echo is not None and echo.opcode == PING:
                ws.send_frame(PONG, echo.payload)
                echo = ws.recv_frame()
            results["answering"] = (pings, echo)

    def library() -> None:
        with open_ws(ping_server, "/echo") as ws:
            end = time.monotonic() + observe_for
            n = 0
            while time.monotonic() < end:
                ws.send(f"tick {n}")
                assert ws.recv(timeout=TIMEOUT) == f"tick {n}"
                n += 1
                time.sleep(0.1)  # pacing of the client's own traffic, not a settle wait
            results["library"] = n

    def run(target: Any) -> None:
        try:
            target()
        except BaseException as exc:  # re-raised in the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in (silent, answering, library)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    if errors:
        raise errors[0]
    frames, close, elapsed = results["silent"]
    assert any(f.opcode == PING for f in frames), frames
    assert close is not None and close.close_code == 1011, (frames, close)
    # first ping at 0.5 s, pong due 0.5 s later, sweep granularity 0.25 s: well under 3 s
    assert elapsed < 3.0, elapsed
    pings, echo = results["answering"]
    assert pings >= 3, pings
    assert echo is not None and (echo.opcode, echo.payload) == (TEXT, b"still here")
    assert results["library"] >= 10
