"""A keep-alive response whose head went out *before* a reload began must not be followed by a
close (the client would send its next request into it): the connection stays usable and the
next request is served — by the new generation in thread mode."""

from __future__ import annotations

import signal
import socket
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import ServerFactory

APP = textwrap.dedent(
    """
    import asyncio

    VERSION = "{version}"

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/stream":
            await send({{"type": "http.response.start", "status": 200, "headers": []}})
            for _ in range(8):
                await asyncio.sleep(0.1)
                await send({{"type": "http.response.body", "body": b"x", "more_body": True}})
            await send({{"type": "http.response.body", "body": b""}})
            return
        body = VERSION.encode()
        await send({{"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]}})
        await send({{"type": "http.response.body", "body": body}})
    """
)


def _read_response(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    while True:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            continue
        if b"transfer-encoding: chunked" in head.lower():
            if body.endswith(b"0\r\n\r\n"):
                return data
        elif b"content-length" in head.lower():
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(body) >= length:
                return data


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_response_started_before_a_reload_keeps_the_connection(
    start_server: ServerFactory, tmp_path: Path, mode: str
) -> None:
    (tmp_path / "kapp.py").write_text(APP.format(version="v1"))
    server = start_server("kapp:app", "--app-dir", str(tmp_path), "--worker-mode", mode,
                          "--no-access-log")
    deadline = time.monotonic() + 20
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200") and b"connection: close" not in first.lower()
        # The head is out; now the reload starts while the body is still streaming.
        (tmp_path / "kapp.py").write_text(APP.format(version="v2"))
        start = len(server.lines)
        server.send_signal(signal.SIGHUP)
        rest = first + _read_response_tail(sock, first, deadline)
        assert rest.endswith(b"0\r\n\r\n")
        # The client reuses the connection, as any HTTP/1.1 client may after that response.
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        second = _read_response(sock, deadline)
        assert second.startswith(b"HTTP/1.1 200"), second
        server.wait_for(r"Reloaded: generation 2", start=start, timeout=15)
        if mode == "thread":
            assert second.endswith(b"v2")  # handed to the new generation


def _read_response_tail(sock: socket.socket, first: bytes, deadline: float) -> bytes:
    data = first
    while not data.endswith(b"0\r\n\r\n"):
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-stream after {data!r}"
        data += chunk
    return data[len(first):]
