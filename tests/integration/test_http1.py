"""HTTP/1.1 behaviour of the real server, seen by real clients: httpx and raw sockets.

Raw-socket responses are parsed with h11 in client mode (a second, independent HTTP/1.1
implementation), so framing errors on the server side show up as parse failures here.
Servers that tests do not disturb are module-scoped; each test uses its own connections.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
from conftest import ServerFactory, ServerProcess, wait_until

TIMEOUT = 5.0
HIGH_WATER = 64 * 1024  # devserve.asgi.cycle.HIGH_WATER
SOCKET_READ = 256 * 1024  # the largest single read of asyncio's and uvloop's transports


# --- helpers ------------------------------------------------------------------------------------


def module_server(tmp_path_factory: pytest.TempPathFactory, *args: str,
                  env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """Start one server for a whole module; stopped (SIGTERM) at teardown."""
    server = ServerProcess([*args, "--port", "0"], tmp_path_factory.mktemp("server"), env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@dataclass
class RawResponse:
    status: int
    reason: bytes
    http_version: bytes
    headers: dict[str, str]
    body: bytes = b""
    informational: list[int] = field(default_factory=list)


class IncompleteResponse(Exception):
    """The connection ended before the response was complete."""

    def __init__(self, response: RawResponse | None, body: bytes, cause: BaseException) -> None:
        super().__init__(f"incomplete response ({cause!r}); got {response!r} + {body!r}")
        self.response = response
        self.body = body
        self.cause = cause


class RawClient:
    """A plain TCP connection; responses are parsed with an h11 client state machine."""

    def __init__(self, server: ServerProcess, timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buffer = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_until(self, marker: bytes) -> bytes:
        """Bytes up to and including *marker*; the rest stays buffered."""
        while marker not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError(f"connection closed before {marker!r}; got {self.buffer!r}")
            self.buffer += data
        head, _, rest = self.buffer.partition(marker)
        self.buffer = rest
        return head + marker

    def read_response(self, method: str = "GET") -> RawResponse:
        """The next complete response (for a request made with *method*)."""
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "test")]))
        conn.send(h11.EndOfMessage())
        if self.buffer:  # (receive_data(b"") would mean EOF to h11)
            conn.receive_data(self.buffer)
        self.buffer = b""
        response: RawResponse | None = None
        body = bytearray()
        informational: list[int] = []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise IncompleteResponse(response, bytes(body), exc) from None
            if event is h11.NEED_DATA:
                try:
                    data = self.sock.recv(65536)
                except ConnectionResetError as exc:
                    raise IncompleteResponse(response, bytes(body), exc) from None
                conn.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse):
                informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                response = RawResponse(
                    status=event.status_code,
                    reason=bytes(event.reason),
                    http_version=bytes(event.http_version),
                    headers={n.decode(): v.decode() for n, v in event.headers},
                    informational=informational,
                )
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                response.body = bytes(body)
                self.buffer = conn.trailing_data[0]
                return response
            elif isinstance(event, h11.ConnectionClosed):
                raise IncompleteResponse(response, bytes(body), EOFError("closed"))

    def expect_closed(self, timeout: float = TIMEOUT) -> bytes:
        """Wait (bounded) for the server to close; return any bytes that came first."""
        self.sock.settimeout(timeout)
        extra = self.buffer
        self.buffer = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return extra
            except TimeoutError:
                raise AssertionError(f"server kept the connection open for {timeout}s") from None
            if not data:
                return extra
            extra += data


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
            ) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    all_headers = dict(headers or {})
    if body or method in ("POST", "PUT"):
        all_headers.setdefault("Content-Length", str(len(body)))
    lines += [f"{k}: {v}" for k, v in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --- the default server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, "echo_app:app", "--health-path", "/healthz")


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        yield c


def test_get_and_post_echo(client: httpx.Client) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.text == "hello"
    assert r.headers["content-length"] == "5"
    payload = bytes(range(256)) * 40
    r = client.post("/echo", content=payload)
    assert r.status_code == 200
    assert r.content == payload
    assert r.headers["x-method"] == "POST"


def test_pipelining_three_requests_in_one_write(server: ServerProcess) -> None:
    bodies = [b"first", b"the-second-body", b"3"]
    with RawClient(server) as raw:
        raw.send(b"".join(request("POST", "/echo", body) for body in bodies))
        responses = [raw.read_response("POST") for _ in bodies]
    assert [r.status for r in responses] == [200, 200, 200]
    assert [r.body for r in responses] == bodies
    assert [r.headers["x-body-length"] for r in responses] == [str(len(b)) for b in bodies]


def test_pipelined_responses_keep_request_order_behind_a_slow_one(server: ServerProcess) -> None:
    with RawClient(server) as raw:
        raw.send(request("GET", "/slow?s=0.3") + request("POST", "/echo", b"second")
                 + request("GET", "/"))
        first, second, third = (raw.read_response(m) for m in ("GET", "POST", "GET"))
    assert (first.status, first.body) == (200, b"slow done")
    assert (second.status, second.body) == (200, b"second")
    assert (third.status, third.body) == (200, b"hello")


def test_expect_100_continue(server: ServerProcess) -> None:
    body = b"sent only after 100 Continue"
    with RawClient(server) as raw:
        raw.send(request("POST", "/echo", headers={
            "Content-Length": str(len(body)), "Expect": "100-continue"}))
        interim = raw.recv_until(b"\r\n\r\n")
        status_line = interim.split(b"\r\n")[0]
        assert status_line.startswith(b"HTTP/1.1 100"), interim
        assert raw.buffer == b"", "the final response must wait for the body"
        raw.send(body)
        response = raw.read_response("POST")
    assert response.status == 200
    assert response.body == body
    assert status_line == b"HTTP/1.1 100 Continue"


def test_expect_100_continue_not_sent_when_the_app_ignores_the_body(
        server: ServerProcess) -> None:
    with RawClient(server) as raw:
        raw.send(request("POST", "/", headers={"Content-Length": "5",
                                               "Expect": "100-continue"}))
        response = raw.read_response("POST")
        assert response.informational == []
        assert (response.status, response.body) == (200, b"hello")
        # The body was never sent, so the connection cannot be reused: the server closes it.
        assert raw.expect_closed() == b""


def test_unread_request_body_is_drained_or_the_close_announced(server: ServerProcess) -> None:
    """The app ("/") answers without reading the body. The server may then read and discard
    the rest of the body and keep the connection, or close it -- but a close must be announced
    with ``Connection: close`` (RFC 9112 section 9.6), or the client reuses a dead connection
    or loses the response to a reset."""
    with RawClient(server) as raw:
        raw.send(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n"
                 + b"x" * 1000)
        response = raw.read_response("POST")
        assert (response.status, response.body) == (200, b"hello")
        if response.headers.get("connection") == "close":
            assert raw.expect_closed() == b""
            return
        raw.send(b"x" * 99_000 + request("GET", "/"))
        follow_up = raw.read_response()
        assert (follow_up.status, follow_up.body) == (200, b"hello")


def test_chunked_upload_to_slow_consumer_is_bounded(client: httpx.Client) -> None:
    data = random.Random(1234).randbytes(8 * 1024 * 1024)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 64 * 1024):
            yield data[i:i + 64 * 1024]

    r = client.post("/slow-upload?delay=0.01", content=chunks(), timeout=60)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["total"] == len(data)
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    sizes: list[int] = result["sizes"]
    # Backpressure: the server stops reading once HIGH_WATER bytes wait for the app, so one
    # receive() never returns more than that plus one socket read.
    assert max(sizes) <= HIGH_WATER + SOCKET_READ, max(sizes)
    assert len(sizes) >= len(data) // (HIGH_WATER + SOCKET_READ)


def test_head_has_length_but_no_body(server: ServerProcess, client: httpx.Client) -> None:
    r = client.head("/")
    assert r.status_code == 200
    assert r.headers["content-length"] == "5"
    assert r.content == b""
    # On the wire: a body after the HEAD response would corrupt the pipelined GET after it.
    with RawClient(server) as raw:
        raw.send(request("HEAD", "/") + request("HEAD", "/stream?n=3") + request("GET", "/"))
        head = raw.read_response("HEAD")
        streamed_head = raw.read_response("HEAD")
        get = raw.read_response("GET")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == "5"
    assert streamed_head.status == 200 and streamed_head.body == b""
    assert (get.status, get.body) == (200, b"hello")


def test_streaming_response_is_chunked(client: httpx.Client) -> None:
    with client.stream("GET", "/stream?n=4") as r:
        assert r.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in r.headers
        text = r.read().decode()
    assert text == "".join(f"part {i}\n" for i in range(4))


def test_malformed_request_line_gets_400_and_close(server: ServerProcess) -> None:
    with RawClient(server) as raw:
        raw.send(b"THIS IS NOT HTTP\r\n\r\n")
        response = raw.read_response()
        assert response.status == 400
        assert response.headers.get("connection") == "close"
        assert raw.expect_closed() == b""


def test_huge_header_gets_431(server: ServerProcess) -> None:
    head = b"GET / HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    with RawClient(server) as raw:
        try:
            raw.send(head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before it read everything; read the answer
        response = raw.read_response()
        assert response.status == 431
        assert raw.expect_closed() == b""


def test_app_exception_gives_plain_500_and_server_keeps_serving(
        server: ServerProcess, client: httpx.Client) -> None:
    r = client.get("/error")
    assert r.status_code == 500
    assert "Traceback" not in r.text
    assert "boom-secret-detail" not in r.text
    assert r.headers["content-type"].startswith("text/plain")
    # The traceback goes to the server log instead.
    server.wait_for(r"RuntimeError: boom-secret-detail")
    assert client.get("/").status_code == 200
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as fresh:
        assert fresh.get("/").text == "hello"


def test_exception_after_response_started_closes_connection(server: ServerProcess) -> None:
    with RawClient(server) as raw:
        raw.send(request("GET", "/error-after-start"))
        with pytest.raises(IncompleteResponse) as info:
            raw.read_response()
    assert info.value.response is not None and info.value.response.status == 200
    assert info.value.body == b"0123456789"
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.get("/error-after-start")
        assert c.get("/").status_code == 200


def test_client_disconnect_is_seen_by_the_app(server: ServerProcess,
                                              client: httpx.Client) -> None:
    key = uuid.uuid4().hex

    def record() -> dict[str, Any]:
        result: dict[str, Any] = client.get("/disconnects", params={"key": key}).json()
        return result

    with RawClient(server) as raw:
        raw.send(request("POST", f"/wait-disconnect?key={key}", b"payload"))
        wait_until(lambda: record()["waiting"], timeout=TIMEOUT,
                   what="the app waiting on receive()")
        assert record()["message"] is None  # still waiting while the client is connected
    final = wait_until(lambda: record()["message"] and record(), TIMEOUT, "http.disconnect")
    assert final["message"] == "http.disconnect"


def test_send_after_client_disconnect_raises_oserror(server: ServerProcess,
                                                      client: httpx.Client) -> None:
    """The scope says ASGI spec 2.4, so send() on a closed connection must raise OSError:
    streaming apps (Starlette's StreamingResponse) rely on it to stop."""
    key = uuid.uuid4().hex
    with RawClient(server) as raw:
        raw.send(request("GET", f"/stream-forever?key={key}&limit=300"))
        raw.recv_until(b"tick 1\n")
    record = wait_until(
        lambda: (r := client.get("/disconnects", params={"key": key}).json())["message"] and r,
        TIMEOUT, "the streaming app to notice the disconnect")
    assert record["message"].startswith("send raised"), record


def test_health_path_answers_without_the_app(client: httpx.Client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.text.strip() == "ok"
    # The app itself would have answered 404 for this path.
    assert client.get("/healthz-not").status_code == 404


def test_lifespan_state_is_in_the_request_scope(client: httpx.Client) -> None:
    scope = client.get("/scope").json()
    assert scope["has_state"] is True
    assert scope["state"]["started"] == "yes"


def test_proxy_headers_honoured_from_localhost(client: httpx.Client) -> None:
    scope = client.get("/scope", headers={
        "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}).json()
    assert scope["client"][0] == "203.0.113.7"
    assert scope["scheme"] == "https"
    plain = client.get("/scope").json()
    assert plain["client"][0] == "127.0.0.1"
    assert plain["scheme"] == "http"


def test_scope_basics(server: ServerProcess, client: httpx.Client) -> None:
    scope = client.get("/scope?a=1&b=%20x", headers={"X-Test": "yes"}).json()
    assert scope["type"] == "http"
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["path"] == "/scope"
    assert scope["root_path"] == ""
    assert scope["query_string"] == "a=1&b=%20x"
    assert ["x-test", "yes"] in scope["headers"]
    assert scope["server"] == ["127.0.0.1", server.port]


def test_access_log_line(server: ServerProcess, client: httpx.Client) -> None:
    probe = f"/access-probe-{uuid.uuid4().hex}"
    assert client.get(probe).status_code == 404
    server.wait_for(rf'127\.0\.0\.1:\d+ - "GET {probe} HTTP/1\.1" 404')


def test_default_server_and_date_headers(client: httpx.Client) -> None:
    r = client.get("/")
    assert r.headers["server"] == "devserve"
    parsed = email.utils.parsedate_to_datetime(r.headers["date"])
    assert abs(parsed.timestamp() - time.time()) < 60


# --- a server with non-default HTTP options -----------------------------------------------------


@pytest.fixture(scope="module")
def options_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from module_server(
        tmp_path_factory, "echo_app:app", "--root-path", "/api",
        "--forwarded-allow-ips", "10.0.0.1", "--no-access-log", "--header", "X-Custom: 1",
        "--no-server-header", "--no-date-header", "--limit-request-body", "1000",
    )


@pytest.fixture
def options_client(options_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=options_server.url, timeout=TIMEOUT) as c:
        yield c


def test_root_path(options_client: httpx.Client) -> None:
    scope = options_client.get("/scope?q=1").json()
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/scope"
    assert scope["query_string"] == "q=1"


def test_proxy_headers_ignored_from_untrusted_peer(options_client: httpx.Client) -> None:
    scope = options_client.get("/scope", headers={
        "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}).json()
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"


def test_custom_header_and_no_server_or_date(options_client: httpx.Client) -> None:
    for path in ("/", "/missing", "/error"):
        r = options_client.get(path)
        assert r.headers["x-custom"] == "1", path
        assert "server" not in r.headers, path
        assert "date" not in r.headers, path


def test_no_access_log(options_server: ServerProcess, options_client: httpx.Client) -> None:
    probe = f"/quiet-probe-{uuid.uuid4().hex}"
    assert options_client.get(probe).status_code == 404
    # An error logged after the probe proves the log has caught up past it.
    marker_start = len(options_server.lines)
    assert options_client.get("/error").status_code == 500
    options_server.wait_for(r"boom-secret-detail", start=marker_start)
    assert probe not in options_server.output
    assert '"GET /' not in options_server.output


def test_request_body_limit(options_server: ServerProcess,
                            options_client: httpx.Client) -> None:
    ok = options_client.post("/echo", content=b"x" * 1000)
    assert (ok.status_code, len(ok.content)) == (200, 1000)
    too_big = options_client.post("/echo", content=b"x" * 2000)
    assert too_big.status_code == 413
    # Refused from the head alone: no need to send the body first.
    with RawClient(options_server) as raw:
        raw.send(request("POST", "/echo", headers={"Content-Length": "5000"}))
        response = raw.read_response("POST")
        assert response.status == 413
        assert raw.expect_closed() == b""


def test_request_body_limit_chunked(options_server: ServerProcess) -> None:
    body = b"y" * 2000
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with RawClient(options_server) as raw:
        raw.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + chunked)
        response = raw.read_response("POST")
        assert response.status == 413
        assert raw.expect_closed() == b""


# --- timeouts -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timeout_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, "echo_app:app", "--timeout-keep-alive", "1",
                             "--timeout-request-header", "1")


def test_keep_alive_timeout_closes_idle_connection(timeout_server: ServerProcess) -> None:
    with RawClient(timeout_server) as raw:
        raw.send(request("GET", "/"))
        response = raw.read_response()
        assert response.status == 200
        assert response.headers.get("connection") != "close"
        idle_since = time.monotonic()
        assert raw.expect_closed(timeout=4.0) == b""
        waited = time.monotonic() - idle_since
    assert 0.5 <= waited < 3.0, waited


def test_request_header_timeout_gives_408(timeout_server: ServerProcess) -> None:
    with RawClient(timeout_server) as raw:
        started = time.monotonic()
        raw.send(b"GET / HTTP/1.1\r\nHost: test\r\nX-Partial: still-typ")
        response = raw.read_response()
        waited = time.monotonic() - started
        assert response.status == 408
        assert raw.expect_closed() == b""
    assert 0.5 <= waited < 3.0, waited


# --- servers of their own -----------------------------------------------------------------------


def test_limit_concurrency_503_while_slow_request_in_flight(
        start_server: ServerFactory, tmp_path: Path) -> None:
    server = start_server("echo_app:app", "--limit-concurrency", "1")
    marker = tmp_path / "slow-started"
    result: dict[str, Any] = {}

    def slow() -> None:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
            r = c.get("/slow", params={"s": "1.0", "marker": str(marker)})
            result["status"], result["text"] = r.status_code, r.text

    thread = threading.Thread(target=slow, daemon=True)
    thread.start()
    wait_until(marker.exists, TIMEOUT, "slow request started")
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        r = c.get("/")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert result == {"status": 200, "text": "slow done"}

    def served() -> bool:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
            return c.get("/").status_code == 200

    wait_until(served, TIMEOUT, "200 once the slow request finished")


def test_unix_domain_socket(start_server: ServerFactory, tmp_path: Path) -> None:
    path = tmp_path / "devserve.sock"
    server = start_server("echo_app:app", "--uds", str(path), ready=False)
    server.wait_for(r"Serving generation \d+")
    assert path.exists()
    transport = httpx.HTTPTransport(uds=str(path))
    with httpx.Client(transport=transport, base_url="http://localhost", timeout=TIMEOUT) as c:
        assert c.get("/").text == "hello"
        r = c.post("/echo", content=b"over a unix socket")
        assert r.content == b"over a unix socket"
        scope = json.loads(c.get("/scope").text)
        assert scope["path"] == "/scope"
    assert server.stop() == 0
    assert not path.exists(), "the socket file is removed at shutdown"
