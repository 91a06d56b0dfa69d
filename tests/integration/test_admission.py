"""One admission path for every driver (devserve/serve/admission.py), over the wire.

Each test here failed before the drivers shared ``admit()``: the sync workers answered the
health endpoint 200 while draining and ignored ``--root-path``; HTTP/3 had neither the health
endpoint nor ``--limit-concurrency``; the sync workers had no ``--limit-concurrency`` either.
The apps are written into the test's directory; a held request says "held" on the server's
output (a readiness line) and waits for a release file, so no test sleeps.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import h11
import httpx
import pytest
from apps import h3_client
from conftest import ServerFactory

ASGI_APP = '''
import asyncio, os, sys

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    status, body = 404, b"app 404"
    if scope["path"] in ("/", "/api/"):
        status, body = 200, b"app"
    elif scope["path"].endswith("/hold"):
        release = os.environ["ADMISSION_RELEASE"]
        print("held", scope["path"], flush=True)
        for _ in range(1500):
            if os.path.exists(release):
                break
            await asyncio.sleep(0.01)
        status, body = 200, b"released"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
'''

WSGI_APP = '''
import os, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    status, body = "404 Not Found", b"app 404"
    if path == "/":
        status, body = "200 OK", b"app"
    elif path == "/hold":
        release = os.environ["ADMISSION_RELEASE"]
        print("held", path, flush=True)
        for _ in range(1500):
            if os.path.exists(release):
                break
            time.sleep(0.01)
        status, body = "200 OK", b"released"
    start_response(status, [("content-type", "text/plain")])
    return [body]
'''


def write_apps(directory: Path) -> dict[str, str]:
    (directory / "adm_asgi.py").write_text(ASGI_APP)
    (directory / "adm_wsgi.py").write_text(WSGI_APP)
    return {"ADMISSION_RELEASE": str(directory / "release")}


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """*count* responses to requests already sent (pipelined) on *sock*, read with one h11
    client connection, each as (status, headers, body)."""
    client = h11.Connection(h11.CLIENT)
    out: list[tuple[int, dict[bytes, bytes], bytes]] = []
    for _ in range(count):
        if client.our_state is h11.DONE:
            client.start_next_cycle()
        client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        client.send(h11.EndOfMessage())  # the bytes went out already: only the state counts
        status, headers, body = 0, {}, b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                assert data, f"the connection closed after {len(out)} responses"
                client.receive_data(data)
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        out.append((status, headers, body))
    return out


def test_sync_worker_answers_health_503_while_draining(start_server: ServerFactory,
                                                       tmp_path: Path) -> None:
    """--limit-max-requests 2 drains the (process-mode) worker right after the second request;
    the third, pipelined behind it, is served during that drain and must say 503."""
    env = write_apps(tmp_path)
    server = start_server("adm_wsgi:app", "--worker-mode", "process", "--workers", "1",
                          "--limit-max-requests", "2", "--health-path", "/healthz", env=env)
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        head = "HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(f"GET / {head}GET / {head}GET /healthz {head}".encode())
        first, second, health = read_responses(sock, 3)
    assert (first[0], first[2]) == (200, b"app") and (second[0], second[2]) == (200, b"app")
    status, headers, body = health
    assert (status, body) == (503, b"Service Unavailable\n"), (status, headers, body)
    assert headers[b"retry-after"] == b"1" and headers[b"connection"] == b"close"


# WSGI always runs on the sync workers: (wsgi, sync) would repeat (wsgi, default).
@pytest.mark.parametrize(("app", "execution"), [
    ("adm_wsgi:app", "default"), ("adm_asgi:app", "default"), ("adm_asgi:app", "sync")])
def test_health_path_includes_the_root_path_on_every_driver(
        start_server: ServerFactory, tmp_path: Path, app: str, execution: str) -> None:
    """The health check compares the ASGI ``path`` (``--root-path`` + request path), on the
    asyncio driver and on the blocking one (WSGI, or ASGI under ``--execution sync``)."""
    extra = ["--execution", "sync"] if execution == "sync" else []
    server = start_server(app, "--root-path", "/api", "--health-path", "/api/healthz", *extra,
                          env=write_apps(tmp_path))
    with httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.get("/healthz")
        assert (r.status_code, r.text) == (200, "ok\n")
        assert client.get("/healthz?probe=1").status_code == 200
        assert client.get("/").text == "app"  # the app beside it


def test_sync_worker_limit_concurrency_answers_503(start_server: ServerFactory,
                                                   tmp_path: Path) -> None:
    env = write_apps(tmp_path)
    server = start_server("adm_wsgi:app", "--workers", "1", "--threads", "4",
                          "--limit-concurrency", "1", env=env)
    held: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: held.append(httpx.get(server.url + "/hold",
                                                                   timeout=20)))
    thread.start()
    try:
        server.wait_for(r"held /hold")
        r = httpx.get(server.url + "/", timeout=10)
        assert (r.status_code, r.text) == (503, "Service Unavailable\n")
        assert r.headers["retry-after"] == "1"
    finally:
        Path(env["ADMISSION_RELEASE"]).write_text("go")
        thread.join(20)
    assert [(x.status_code, x.text) for x in held] == [(200, "released")]
    assert httpx.get(server.url + "/", timeout=10).text == "app"


def serve_h3(start_server: ServerFactory, tmp_path: Path, *extra: str):  # type: ignore[no-untyped-def]
    server = start_server("adm_asgi:app", "--https", "--http3", *extra,
                          env=write_apps(tmp_path))
    server.wait_for(r"\(HTTP/3 over UDP\)")
    return server


def test_http3_health_endpoint(start_server: ServerFactory, tmp_path: Path) -> None:
    server = serve_h3(start_server, tmp_path, "--health-path", "/healthz")

    async def scenario() -> None:
        async with h3_client.h3_connect(server.host, server.port) as client:
            r = await client.request("GET", "/healthz?probe=1")
            assert (r.status, r.text) == (200, "ok\n")
            assert b"connection" not in r.headers  # a connection-specific field: not in HTTP/3
            r = await client.request("GET", "/")
            assert (r.status, r.text) == (200, "app")

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_http3_limit_concurrency_answers_503(start_server: ServerFactory,
                                             tmp_path: Path) -> None:
    server = serve_h3(start_server, tmp_path, "--limit-concurrency", "1")
    release = tmp_path / "release"

    async def scenario() -> None:
        async with h3_client.h3_connect(server.host, server.port) as client:
            _, hold = client.start("GET", "/hold")
            await asyncio.to_thread(server.wait_for, r"held /hold")
            r = await client.request("GET", "/")
            assert (r.status, r.text) == (503, "Service Unavailable\n")
            assert r.headers[b"retry-after"] == b"1"
            release.write_text("go")
            r = await hold
            assert (r.status, r.text) == (200, "released")
            r = await client.request("GET", "/")
            assert (r.status, r.text) == (200, "app")

    try:
        asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        release.write_text("go")
