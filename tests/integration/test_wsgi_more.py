"""More WSGI-on-SyncWorker checks through the real server and real clients (test_wsgi.py has the
basics): the Flask and Django examples' 404 and 500 pages and ``close()`` of their response
iterables, 200 keep-alive clients on 4 threads in thread and process mode, and an app that calls
``start_response`` twice."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import APPS, ServerFactory, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 10.0
SECRET = "this detail must not reach the client"

FRAMEWORKS = {
    # name: (served app, example's own app, its directory, the 500 page it renders)
    "flask": ("wsgi_more_examples:flask_app", "flask_app:app", EXAMPLES,
              "Internal Server Error"),
    "django": ("wsgi_more_examples:django_app", "mysite.wsgi:application",
               EXAMPLES / "django_project", "Server Error (500)"),
}


def assert_no_leak(text: str) -> None:
    assert SECRET not in text
    assert "Traceback" not in text and "RuntimeError" not in text
    assert 'File "' not in text  # no stack frame either


# --- the examples: 404, 500, and close() --------------------------------------------------------


@pytest.mark.parametrize("mode", ["thread", "process"])
@pytest.mark.parametrize("name", list(FRAMEWORKS))
def test_example_404_and_500_pages_then_keeps_serving(start_server: ServerFactory, name: str,
                                                      mode: str) -> None:
    _, app, app_dir, page_500 = FRAMEWORKS[name]
    server = start_server(app, "--app-dir", str(app_dir), "--worker-mode", mode,
                          "--workers", "1", "--threads", "4")
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        r = client.get("/no/such/page")
        assert r.status_code == 404
        assert r.headers["server"] == "devserve"
        assert "Not Found" in r.text
        assert r.headers["content-length"] == str(len(r.content))

        r = client.get("/error")
        assert r.status_code == 500
        assert page_500 in r.text  # the framework's page, not a server fallback
        assert_no_leak(r.text)
        assert r.headers.get("connection") != "close"

        # The same keep-alive connection and a fresh one both still serve.
        for _ in range(3):
            assert client.get("/").status_code == 200
        assert httpx.get(server.url + "/", timeout=TIMEOUT).status_code == 200
    # The server log is not the client: for Flask the traceback goes to the server's output.
    if name == "flask":
        server.wait_for(SECRET)


@pytest.mark.parametrize("name", list(FRAMEWORKS))
def test_example_response_iterables_are_closed(start_server: ServerFactory, name: str) -> None:
    """Counted with the frameworks' own hooks (see tests/apps/wsgi_more_examples.py): Flask's
    ``call_on_close`` and Django's ``request_finished``, plus ``close()`` of the files handed
    to ``wsgi.file_wrapper``."""
    app, _, _, _ = FRAMEWORKS[name]
    server = start_server(app, "--app-dir", str(APPS), "--worker-mode", "thread",
                          "--workers", "1", "--threads", "4")
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:

        def closed() -> tuple[int, int]:
            responses, files = client.get("/__closed__").text.split()
            return int(responses), int(files)

        requests = [("/", 200), ("/stream?count=3", 200), ("/file", 200),
                    ("/no/such/page", 404), ("/error", 500)]
        # werkzeug's send_file passes the file wrapper straight through (direct_passthrough):
        # closing it closes the file, and Flask's Response.close() is not involved.
        expected_responses = len(requests) - (1 if name == "flask" else 0)
        before = closed()
        for path, status in requests:
            r = client.get(path)
            assert r.status_code == status, (path, r.text[:200])

        def delta() -> tuple[int, int]:
            now = closed()
            return now[0] - before[0], now[1] - before[1]

        # close() runs right after the last byte went out: the client may be faster.
        wait_until(lambda: delta()[0] >= expected_responses and delta()[1] >= 1,
             what="close() of every response")
        assert delta() == (expected_responses, 1)

    # A streaming response the client abandons half-way is closed too.
    def responses_closed() -> int:
        return int(httpx.get(server.url + "/__closed__", timeout=TIMEOUT).text.split()[0])

    before_abandon = responses_closed()
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /stream?count=100000 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"chunk 0" in _recv_until(sock, b"chunk 0")
    wait_until(lambda: responses_closed() > before_abandon, timeout=15,
         what="close() after the client left mid-stream")


def _recv_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


# --- 200 keep-alive clients on 4 threads ----------------------------------------------------------

CLIENTS = 200
CONNECTING = 32  # clients between connect and first answer at once
DEADLINE = 30.0


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a content-length; leftover bytes stay in *buf*."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {bytes(buf)!r}")
        buf += chunk
    head, _, _ = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:])}
    length = int(headers["content-length"])
    start = len(head) + 4
    while len(buf) < start + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of a body")
        buf += chunk
    body = bytes(buf[start:start + length])
    del buf[:start + length]
    if headers.get("connection", "").lower() == "close":
        raise ConnectionError(f"server closed a keep-alive connection after {status}")
    return status, body


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_200_keep_alive_clients_on_4_threads(start_server: ServerFactory, mode: str) -> None:
    """Every client connects, gets an answer, then idles on its open connection until all 200
    are idle at once (a barrier); then all send a second request on the same connection at
    the same moment. With a thread pinned per idle connection the 5th client would get no
    first answer until an idle connection timed out (60 s here), past the deadline.

    The default accept queue (max(64, 4 x threads x workers) = 64 new connections waiting)
    answers a burst of more *new* connections with 503 by design, so at most ``CONNECTING``
    clients are between connect and first answer at a time. Idle connections do not count
    against that bound: the 200 second requests arrive at once."""
    server = start_server("wsgi_app:app", "--app-dir", str(APPS), "--worker-mode", mode,
                          "--workers", "1", "--threads", "4", "--timeout-keep-alive", "60",
                          "--no-access-log")
    deadline = time.monotonic() + DEADLINE
    barrier = threading.Barrier(CLIENTS)
    connecting = threading.BoundedSemaphore(CONNECTING)
    results: list[list[tuple[int, bytes]]] = [[] for _ in range(CLIENTS)]
    errors: list[str] = []

    def client(index: int) -> None:
        try:
            assert connecting.acquire(timeout=max(0.1, deadline - time.monotonic()))
            with socket.create_connection((server.host, server.port), timeout=DEADLINE) as s:
                buf = bytearray()
                for round_no in range(2):
                    s.settimeout(max(0.1, deadline - time.monotonic()))
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    status, body = _read_response(s, buf)
                    results[index].append((status, body))
                    if round_no == 0:
                        connecting.release()  # now an idle keep-alive connection
                        barrier.wait(max(0.1, deadline - time.monotonic()))
        except (OSError, AssertionError, threading.BrokenBarrierError, ValueError,
                KeyError) as exc:
            errors.append(f"client {index}: {type(exc).__name__}: {exc}")
            barrier.abort()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    elapsed = time.monotonic() - started
    alive = sum(t.is_alive() for t in threads)
    first_errors = sorted(errors)[:5]
    assert alive == 0, f"{alive} clients still waiting after {DEADLINE}s; errors: {first_errors}"
    assert not errors, f"{len(errors)} clients failed: {first_errors}"
    answers = [r for per_client in results for r in per_client]
    assert len(answers) == 2 * CLIENTS
    assert all(status == 200 and body == b"ok" for status, body in answers)
    assert elapsed < DEADLINE
    # The server is still healthy afterwards, and no request ended up as an error.
    assert httpx.get(server.url + "/", timeout=TIMEOUT).text == "ok"
    assert "Traceback" not in server.output


# --- start_response twice -----------------------------------------------------------------------


def test_start_response_twice_is_500_logged_and_server_keeps_serving(
        start_server: ServerFactory) -> None:
    server = start_server("wsgi_app:app", "--app-dir", str(APPS), "--worker-mode", "thread",
                          "--workers", "1", "--threads", "2")
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        assert client.get("/").text == "ok"
        index = len(server.lines)
        r = client.get("/twice")
        assert r.status_code == 500
        assert "never" not in r.text  # the app's body is not sent
        assert "Traceback" not in r.text and "start_response" not in r.text
        server.wait_for("Exception in WSGI application", start=index)
        server.wait_for(re.escape("start_response() called twice without exc_info"),
                        start=index)
        # The same keep-alive connection still serves, and so does a new one, many times.
        for _ in range(5):
            assert client.get("/").text == "ok"
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as fresh:
        assert fresh.get("/twice").status_code == 500
        assert [fresh.get("/").status_code for _ in range(5)] == [200] * 5
