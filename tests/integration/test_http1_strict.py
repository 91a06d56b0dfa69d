"""RFC 9112 MUST-reject cases against the real server over raw sockets: 400, ``connection:
close``, then the server closes, and a request smuggled behind the bad one is never answered.

Both request paths run the same sans-IO adapter but drive it differently, so both are checked:
the asyncio worker (ASGI echo app) and the blocking SyncWorker (WSGI app). Responses are parsed
with an independent h11 client; everything up to the server's FIN is read, so a second response
(the smuggled request served) shows up as leftover bytes.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import h11
import pytest
from conftest import APPS, ServerProcess

from tests.h11_client import only_response

TIMEOUT = 5.0
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def head(*lines: bytes, start: bytes = b"POST /echo HTTP/1.1") -> bytes:
    return b"\r\n".join((start, *lines)) + b"\r\n\r\n"


CHUNKED = b"Transfer-Encoding: chunked"
CASES: dict[str, bytes] = {
    # RFC 9112 6.1: Content-Length with Transfer-Encoding (both orders).
    "content-length+transfer-encoding": head(b"Host: x", b"Content-Length: 5", CHUNKED)
    + b"0\r\n\r\n",
    "transfer-encoding+content-length": head(b"Host: x", CHUNKED, b"Content-Length: 5")
    + b"0\r\n\r\n",
    # 5.2: obs-fold.
    "obs-fold-space": head(b"Host: x", b"X-A: one", b" two", start=b"GET / HTTP/1.1"),
    "obs-fold-tab": head(b"Host: x", b"X-A: one", b"\ttwo", start=b"GET / HTTP/1.1"),
    "obs-fold-of-content-length": head(b"Host: x", b"Content-Length:", b" 3") + b"abc",
    # 6.3: duplicate or invalid Content-Length.
    "content-length-conflicting-lines": head(
        b"Host: x", b"Content-Length: 1", b"Content-Length: 2") + b"ab",
    "content-length-conflicting-list": head(b"Host: x", b"Content-Length: 1, 2") + b"ab",
    "content-length-letters": head(b"Host: x", b"Content-Length: two") + b"ab",
    "content-length-sign": head(b"Host: x", b"Content-Length: +2") + b"ab",
    "content-length-negative": head(b"Host: x", b"Content-Length: -2") + b"ab",
    # 5.1: whitespace between field name and colon.
    "space-before-colon": head(b"Host: x", b"X-A : b", start=b"GET / HTTP/1.1"),
    "tab-before-colon": head(b"Host: x", b"Content-Length\t: 2") + b"ab",
    # 2.2: bare CR.
    "bare-cr-request-line": head(b"Host: x", start=b"GET /\r HTTP/1.1"),
    "bare-cr-header": head(b"Host: x", b"X-A: b\rc", start=b"GET / HTTP/1.1"),
    # 3.2: Host missing on HTTP/1.1, repeated, invalid.
    "missing-host": head(b"X-A: b", start=b"GET / HTTP/1.1"),
    "two-hosts": head(b"Host: a", b"Host: b", start=b"GET / HTTP/1.1"),
    "two-hosts-http10": head(b"Host: a", b"Host: b", start=b"GET / HTTP/1.0"),
    "invalid-host": head(b"Host: a b", start=b"GET / HTTP/1.1"),
    # 6.3: Transfer-Encoding whose final coding is not chunked; chunked twice.
    "transfer-encoding-gzip": head(b"Host: x", b"Transfer-Encoding: gzip") + b"abc",
    "transfer-encoding-chunked-gzip": head(b"Host: x", b"Transfer-Encoding: chunked, gzip")
    + b"0\r\n\r\n",
    "transfer-encoding-chunked-twice": head(b"Host: x", CHUNKED, CHUNKED) + b"0\r\n\r\n",
    # 6.1: Transfer-Encoding on HTTP/1.0.
    "transfer-encoding-http10": head(CHUNKED, start=b"POST /echo HTTP/1.0") + b"0\r\n\r\n",
    # 7.1: invalid chunk size / framing.
    "chunk-size-not-hex": head(b"Host: x", CHUNKED) + b"zz\r\nab\r\n0\r\n\r\n",
    "chunk-size-0x": head(b"Host: x", CHUNKED) + b"0x2\r\nab\r\n0\r\n\r\n",
    "chunk-size-overflow": head(b"Host: x", CHUNKED) + b"f" * 40 + b"\r\nab\r\n0\r\n\r\n",
    "chunk-data-longer-than-size": head(b"Host: x", CHUNKED) + b"2\r\nabXX\r\n0\r\n\r\n",
}


@pytest.fixture(scope="module", params=["asgi-asyncio", "wsgi-sync"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    app = "echo_app:app" if request.param == "asgi-asyncio" else "wsgi_app:app"
    # Thread mode: the same connection code as process workers, one process fewer per server.
    proc = ServerProcess([app, "--app-dir", str(APPS), "--port", "0", "--worker-mode", "thread"],
                         tmp_path_factory.mktemp("strict"))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def exchange(server: ServerProcess, data: bytes) -> bytes:
    """Send *data*, then read until the server closes; fails if it does not close in time."""
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):  # socket.timeout here: the server kept it open
            received += chunk
    return received


@pytest.mark.parametrize("data", CASES.values(), ids=CASES.keys())
def test_rejected_with_400_and_closed(server: ServerProcess, data: bytes) -> None:
    response, _ = only_response(exchange(server, data + SMUGGLED))
    assert response.status_code == 400
    assert (b"connection", b"close") in response.headers


def test_unknown_coding_before_chunked_is_501_and_closed(server: ServerProcess) -> None:
    data = head(b"Host: x", b"Transfer-Encoding: gzip, chunked") + b"0\r\n\r\n"
    response, _ = only_response(exchange(server, data + SMUGGLED))
    assert (response.status_code, response.reason) == (501, b"Not Implemented")
    assert (b"connection", b"close") in response.headers


def test_keep_alive_connection_then_smuggling_attempt(server: ServerProcess) -> None:
    """A good request first, then the attack on the same connection: one 200, one 400, EOF."""
    good = head(b"Host: x", b"Content-Length: 2") + b"ok"
    attack = head(b"Host: x", b"Content-Length: 4", CHUNKED) + b"0\r\n\r\n"
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(good)
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method="POST", target="/echo",
                                headers=[("Host", "x"), ("Content-Length", "2")]))
        client.send(h11.Data(data=b"ok"))
        client.send(h11.EndOfMessage())
        body = b""
        while not isinstance(event := client.next_event(), h11.EndOfMessage):
            if event is h11.NEED_DATA:
                client.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                assert event.status_code == 200
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
        assert body == b"ok"
        sock.sendall(attack + SMUGGLED)
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    response, _ = only_response(rest)
    assert response.status_code == 400


@pytest.mark.parametrize(("data", "body"), [
    (head(start=b"GET /echo HTTP/1.0"), b""),  # HTTP/1.0 may omit Host
    (head(b"Host: x", b"Content-Length: 2, 2") + b"ab", b"ab"),  # one value, repeated
    (head(b"Host: x", CHUNKED) + b"2\r\n\n \r\n0\r\n\r\n", b"\n "),  # fold-like body bytes
    (head(b"Host: [::1]:8000", b"Content-Length: 0"), b""),
], ids=["http10-without-host", "content-length-equal-list", "fold-like-body", "host-ipv6"])
def test_strictness_keeps_valid_requests(server: ServerProcess, data: bytes, body: bytes) -> None:
    closing = data.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    response, received = only_response(exchange(server, closing))
    assert response.status_code == 200
    assert received == body
