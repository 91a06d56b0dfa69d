"""WSGI apps on SyncWorker threads through the real server and real clients: the Flask and
Django examples in both worker modes, PEP 3333 details over the wire, error handling, the
bounded accept queue, keep-alive connections that must not pin threads, and SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import APPS, ServerFactory, ServerProcess, wait_until

from tests.load import connect_refused

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 10.0

FRAMEWORKS = {
    "flask": ("flask_app:app", EXAMPLES, "Hello from Flask"),
    "django": ("mysite.wsgi:application", EXAMPLES / "django_project", "Hello from Django"),
}


@pytest.fixture(scope="module", params=[(f, m) for f in FRAMEWORKS for m in ("thread", "process")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def framework(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[str, httpx.Client]]:
    name, mode = request.param
    app, app_dir, _ = FRAMEWORKS[name]
    server = ServerProcess([app, "--app-dir", str(app_dir), "--port", "0", "--worker-mode", mode,
                            "--workers", "2", "--threads", "4"],
                           tmp_path_factory.mktemp("wsgi"))
    try:
        server.wait_ready(30)
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
            yield name, client
    finally:
        assert server.stop() == 0, server.output


def test_framework_get(framework: tuple[str, httpx.Client]) -> None:
    name, client = framework
    r = client.get("/")
    assert r.status_code == 200
    assert r.text == FRAMEWORKS[name][2]
    assert r.headers["server"] == "devserve"


def test_framework_post_form_and_json(framework: tuple[str, httpx.Client]) -> None:
    _, client = framework
    r = client.post("/form", data={"name": "Zoë", "n": "3"})
    assert r.status_code == 200 and r.json() == {"name": "Zoë", "n": "3"}
    r = client.post("/json", json={"a": [1, 2, {"b": None}]})
    assert r.status_code == 200 and r.json() == {"received": {"a": [1, 2, {"b": None}]}}


def test_framework_streaming_response(framework: tuple[str, httpx.Client]) -> None:
    _, client = framework
    with client.stream("GET", "/stream", params={"count": 20}) as r:
        assert r.status_code == 200
        assert r.headers.get("transfer-encoding") == "chunked"
        text = "".join(r.iter_text())
    assert text == "".join(f"chunk {i}\n" for i in range(20))


def test_framework_file_response(framework: tuple[str, httpx.Client]) -> None:
    name, client = framework
    r = client.get("/file")
    assert r.status_code == 200
    source = EXAMPLES / ("flask_app.py" if name == "flask" else "django_project/mysite/views.py")
    assert r.content == source.read_bytes()
    assert r.headers["content-length"] == str(len(r.content))


def test_flask_chunked_upload(framework: tuple[str, httpx.Client]) -> None:
    name, client = framework
    if name != "flask":
        return  # Django's request.body needs a content-length; the flask route streams

    def chunks() -> Iterator[bytes]:
        for _ in range(16):
            yield b"z" * 65536

    r = client.post("/upload", content=chunks())
    assert r.json() == {"bytes": 16 * 65536}


# --- the plain WSGI test app --------------------------------------------------------------------


@pytest.fixture(scope="module")
def wsgi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(["wsgi_app:app", "--app-dir", str(APPS), "--port", "0",
                            "--worker-mode", "thread", "--threads", "4", "--root-path", "/mnt"],
                           tmp_path_factory.mktemp("wsgi-app"))
    try:
        server.wait_ready(30)
        yield server
    finally:
        assert server.stop() == 0, server.output


@pytest.fixture
def client(wsgi_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=wsgi_server.url, timeout=TIMEOUT) as c:
        yield c


def test_environ_over_the_wire(client: httpx.Client, wsgi_server: ServerProcess) -> None:
    r = client.get("/mnt/environ?q=%2F1", headers={"x-thing": "yes", "content-type": "a/b"})
    env = r.json()
    assert env["REQUEST_METHOD"] == "GET"
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/mnt", "/environ")
    assert env["QUERY_STRING"] == "q=%2F1"
    assert env["HTTP_X_THING"] == "yes" and env["CONTENT_TYPE"] == "a/b"
    assert env["SERVER_PORT"] == str(wsgi_server.port)
    assert env["REMOTE_ADDR"] == "127.0.0.1" and int(env["REMOTE_PORT"]) > 0
    assert env["wsgi.url_scheme"] == "http" and env["wsgi.version"] == [1, 0]
    assert env["wsgi.multithread"] is True and env["wsgi.run_once"] is False


def test_chunked_request_body_read_via_wsgi_input(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"line one\n"
        yield b"line two\nline "
        yield b"three"

    assert client.post("/echo", content=chunks()).content == b"line one\nline two\nline three"
    r = client.post("/lines", content=chunks())
    assert r.json() == ["line one\n", "line two\n", "line three"]
    big = bytes(range(256)) * 8192  # 2 MiB with a content-length
    assert client.post("/echo", content=big).content == big


def test_write_callable_and_file_wrapper(client: httpx.Client) -> None:
    assert client.get("/write").text == "written then returned"
    r = client.get("/file")
    assert r.content == bytes(range(256)) * 800


def test_exc_info_semantics(client: httpx.Client, tmp_path: Path) -> None:
    r = client.get("/replace")
    assert (r.status_code, r.text) == (500, "replaced")
    marker = tmp_path / "reraised"
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/reraise", params={"marker": str(marker)})
    assert marker.read_text() == "reraised"  # start_response re-raised exc_info
    assert client.get("/").status_code == 200


def test_app_exceptions_become_500_without_traceback(client: httpx.Client,
                                                     wsgi_server: ServerProcess) -> None:
    for path in ("/boom", "/twice"):
        r = client.get(path)
        assert r.status_code == 500
        assert "secret" not in r.text and "Traceback" not in r.text
    assert client.get("/").text == "ok"  # same keep-alive connection still serves
    wsgi_server.wait_for("secret traceback detail")  # ...and the log has the details


def test_iterable_closed_when_the_client_disconnects(wsgi_server: ServerProcess,
                                                     tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    with socket.create_connection((wsgi_server.host, wsgi_server.port), timeout=TIMEOUT) as s:
        s.sendall(f"GET /stream?count=100000&marker={marker} HTTP/1.1\r\nHost: x\r\n\r\n"
                  .encode())
        assert b"chunk 0" in s.recv(65536)
    wait_until(lambda: marker.exists() and marker.read_text() == "closed",
         what="close() after the client left")
    with httpx.Client(base_url=wsgi_server.url, timeout=TIMEOUT) as c:
        marker2 = tmp_path / "closed2"
        assert c.get("/stream", params={"count": 3, "marker": str(marker2)}).text.count(
            "chunk") == 3
        # close() runs right after the last chunk went out: the client may be faster.
        wait_until(lambda: marker2.exists() and marker2.read_text() == "closed", what="close()")


def _keep_alive_get(sock: socket.socket) -> bytes:
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith(b"ok"):
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return data


def test_idle_keep_alive_connections_do_not_pin_threads(start_server: ServerFactory) -> None:
    server = start_server("wsgi_app:app", "--app-dir", str(APPS), "--worker-mode", "thread",
                          "--threads", "2", "--timeout-keep-alive", "30")
    idle = [socket.create_connection((server.host, server.port), timeout=TIMEOUT)
            for _ in range(10)]
    try:
        for sock in idle:
            assert b"200 OK" in _keep_alive_get(sock)  # now idle, connection kept open
        started = time.monotonic()
        r = httpx.get(server.url + "/", timeout=5)
        assert r.status_code == 200
        assert time.monotonic() - started < 2.0
        for sock in idle:  # ...and the idle ones are still usable
            assert b"200 OK" in _keep_alive_get(sock)
    finally:
        for sock in idle:
            sock.close()


def test_full_accept_queue_answers_503(start_server: ServerFactory, tmp_path: Path) -> None:
    server = start_server("wsgi_app:app", "--app-dir", str(APPS), "--worker-mode", "thread",
                          "--threads", "1", "--accept-queue", "1")
    marker, release = tmp_path / "started", tmp_path / "release"
    results: dict[str, int] = {}

    def slow(name: str) -> None:
        r = httpx.get(server.url + "/slow", params={"marker": str(marker) if name == "a" else "",
                                                    "release": str(release)}, timeout=20)
        results[name] = r.status_code

    first = threading.Thread(target=slow, args=("a",))
    first.start()
    wait_until(marker.exists, what="the only thread busy")
    queued = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    queued.sendall(f"GET /slow?release={release} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try:
        started = time.monotonic()
        r = httpx.get(server.url + "/", timeout=5)
        assert r.status_code == 503
        assert time.monotonic() - started < 2.0
        assert r.headers["retry-after"] == "1" and r.headers["connection"] == "close"
        release.write_text("go")
        first.join(20)
        assert results == {"a": 200}
        assert b"slow done" in queued.recv(65536) or b"slow done" in queued.recv(65536)
    finally:
        release.write_text("go")
        queued.close()


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_sigterm_finishes_in_flight_refuses_new_and_exits_0(start_server: ServerFactory,
                                                            tmp_path: Path, mode: str) -> None:
    server = start_server("wsgi_app:app", "--app-dir", str(APPS), "--worker-mode", mode,
                          "--threads", "2", "--timeout-graceful-shutdown", "15")
    marker, release = tmp_path / "started", tmp_path / "release"
    result: dict[str, object] = {}

    def in_flight() -> None:
        try:
            r = httpx.get(server.url + "/slow", params={"marker": str(marker),
                                                        "release": str(release)}, timeout=20)
            result["status"], result["body"] = r.status_code, r.text
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=in_flight)
    thread.start()
    try:
        wait_until(marker.exists, what="the request in flight")
        server.send_signal(signal.SIGTERM)
        # The listener closes while the request is in flight: new connections are refused.
        wait_until(lambda: connect_refused(server.host, server.port),
                   what="new connections refused")
        assert thread.is_alive() and server.proc.poll() is None
    finally:
        release.write_text("go")
        thread.join(20)
    assert result.get("status") == 200, result
    assert result["body"] == "slow done"
    assert server.wait_exit(20) == 0, server.output


def test_interface_wsgi_forced_and_json_environ(start_server: ServerFactory) -> None:
    server = start_server("wsgi_app:app", "--app-dir", str(APPS), "--interface", "wsgi",
                          "--worker-mode", "process", "--workers", "2")
    env = json.loads(httpx.get(server.url + "/environ", timeout=TIMEOUT).text)
    assert env["wsgi.multiprocess"] is True


def test_tls_handshake_on_worker_threads(start_server: ServerFactory) -> None:
    server = start_server("wsgi_app:app", "--app-dir", str(APPS), "--worker-mode", "thread",
                          "--threads", "2", "--https")
    assert server.scheme == "https"
    # A client that never starts its handshake must not block the others.
    stalled = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    try:
        with httpx.Client(base_url=server.url, verify=False, http2=True,
                          timeout=TIMEOUT) as c:
            for _ in range(3):
                r = c.get("/environ")
                assert r.http_version == "HTTP/1.1"  # ALPN offers http/1.1 only
                assert r.json()["wsgi.url_scheme"] == "https"
    finally:
        stalled.close()
