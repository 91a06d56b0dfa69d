"""PEP 3333 pieces of devserve.asgi.wsgi, fed real request bytes through the sans-IO
H1Connection (the same path the SyncWorker takes), and responses parsed back with h11."""

from __future__ import annotations

import io
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import h11
import pytest

from devserve.asgi.scope import TrustedProxies
from devserve.asgi.wsgi import (
    FileWrapper,
    WSGIInput,
    WSGIResponse,
    build_environ,
    run_wsgi,
)
from devserve.protocols.http1 import BodyChunk, H1Connection, RequestEnd, RequestHead

Headers = list[tuple[bytes, bytes]]


class Wire:
    """A request on an H1Connection; the body is pulled event by event like the worker does,
    and the response bytes are collected so h11 (client side) can parse them."""

    def __init__(self, raw: bytes, *, chunk: int = 7) -> None:
        self.h1 = H1Connection()
        self.pending = deque(raw[i:i + chunk] for i in range(0, len(raw), chunk))
        self.events: deque[Any] = deque()
        self.out = bytearray()
        self.head = self._next()
        assert isinstance(self.head, RequestHead)

    def _next(self) -> Any:
        while not self.events:
            self.events.extend(self.h1.next_events())
            if not self.events:
                self.h1.feed(self.pending.popleft() if self.pending else b"")
        return self.events.popleft()

    def pull(self) -> bytes:
        event = self._next()
        if isinstance(event, BodyChunk):
            return event.data
        assert isinstance(event, RequestEnd)
        self.events.appendleft(event)  # stay at the end
        return b""

    def environ(self, **kw: Any) -> dict[str, Any]:
        head = self.head
        args: dict[str, Any] = {
            "method": head.method, "target": head.target, "http_version": head.http_version,
            "headers": head.headers, "scheme": "http", "server": ("127.0.0.1", 8000),
            "client": ("10.0.0.7", 51234), "root_path": "", "body": WSGIInput(self.pull),
        }
        args.update(kw)
        return build_environ(**args)

    # ResponseSink
    def write_response(self, status: int, headers: Headers, body: bytes, end: bool) -> None:
        self.out += self.h1.response_head(status, headers) + self.h1.body(body)
        if end:
            self.out += self.h1.end()

    def write_body(self, data: bytes, end: bool) -> None:
        self.out += self.h1.body(data)
        if end:
            self.out += self.h1.end()

    def parsed(self, method: bytes = b"GET") -> tuple[h11.Response, bytes, bool]:
        """(response, body, complete) as a client sees the bytes written so far."""
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        client.send(h11.EndOfMessage())
        client.receive_data(bytes(self.out))
        response, body, complete = None, b"", False
        while True:
            event = client.next_event()
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                complete = True
            else:
                break
        assert response is not None
        return response, body, complete


GET = (b"GET /caf%C3%A9/a%2Fb?x=1&y=%20 HTTP/1.1\r\nHost: example.test:8080\r\n"
       b"Content-Type: text/plain\r\nContent-Length: 0\r\nX-Custom: one\r\nX-Custom: two\r\n"
       b"Cookie: a=1\r\nCookie: b=2\r\nX_Spoofed: no\r\n\r\n")


def test_environ_has_the_pep3333_keys() -> None:
    env = Wire(GET).environ()
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    # Percent-decoded bytes shown as latin-1 text ("bytes in unicode"), %2F decoded too.
    assert env["PATH_INFO"] == "/caf\xc3\xa9/a/b"
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café/a/b"
    assert env["QUERY_STRING"] == "x=1&y=%20"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", "8000")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("10.0.0.7", "51234")
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "0"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["HTTP_HOST"] == "example.test:8080"
    assert env["HTTP_X_CUSTOM"] == "one,two"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert not any("SPOOFED" in k for k in env)  # underscores in names are dropped
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.errors"] is sys.stderr
    assert env["wsgi.file_wrapper"] is FileWrapper
    assert all(isinstance(v, str) for k, v in env.items() if k.isupper())


def test_root_path_becomes_script_name() -> None:
    raw = b"GET /api/items HTTP/1.1\r\nHost: x\r\n\r\n"
    env = Wire(raw).environ(root_path="/api")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/api", "/items")
    env = Wire(b"GET /items HTTP/1.1\r\nHost: x\r\n\r\n").environ(root_path="/api")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/api", "/items")  # proxy stripped it


def test_proxy_headers_from_a_trusted_peer() -> None:
    raw = (b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9, 10.0.0.7\r\n"
           b"X-Forwarded-Proto: https\r\n\r\n")
    env = Wire(raw).environ(trusted=TrustedProxies(["10.0.0.0/8"]))
    assert env["REMOTE_ADDR"] == "203.0.113.9"
    assert env["wsgi.url_scheme"] == "https"
    env = Wire(raw).environ(trusted=TrustedProxies(["127.0.0.1"]))
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("10.0.0.7", "http")


def test_unix_socket_server_name_comes_from_host() -> None:
    env = Wire(b"GET / HTTP/1.1\r\nHost: app.local:9000\r\n\r\n").environ(server=None,
                                                                          client=None)
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("app.local", "9000")
    assert "REMOTE_ADDR" not in env


CHUNKED = (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"6\r\nline1\n\r\n11\r\nline2\nline3-no-nl\r\n0\r\n\r\n")


def test_wsgi_input_streams_a_chunked_body() -> None:
    env = Wire(CHUNKED, chunk=5).environ()
    stream = env["wsgi.input"]
    assert "CONTENT_LENGTH" not in env
    assert env["wsgi.input_terminated"] is True
    assert stream.read(3) == b"lin"
    assert stream.readline() == b"e1\n"
    assert list(stream) == [b"line2\n", b"line3-no-nl"]
    assert stream.read() == b""


def test_wsgi_input_read_all_readinto_and_readlines() -> None:
    body = b"a\nbb\nccc\n" * 100
    raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    stream = Wire(raw, chunk=13).environ()["wsgi.input"]
    buf = bytearray(4)
    n = stream.readinto(buf)  # raw-IO semantics: what is there, at most len(buf)
    assert 0 < n <= 4 and bytes(buf[:n]) == body[:n]
    assert stream.read(4 - n) == body[n:4]
    assert stream.readline(2) == b"\n"
    assert stream.readline(2) == b"cc"
    assert stream.readlines(5) == [b"c\n", b"a\n", b"bb\n"]
    assert stream.read() == body[14:]


def _call(app: Callable[..., Iterable[bytes]], raw: bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
          ) -> tuple[Wire, WSGIResponse]:
    wire = Wire(raw)
    response = WSGIResponse(wire, extra_headers=[(b"server", b"devserve")], force_close=False,
                            is_head=wire.head.method == b"HEAD")
    run_wsgi(app, wire.environ(), response)
    return wire, response


def test_single_chunk_gets_a_content_length() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"made"]

    wire, _ = _call(app)
    response, body, complete = wire.parsed()
    assert (response.status_code, body, complete) == (201, b"made", True)
    headers = dict(response.headers)
    assert headers[b"content-length"] == b"4"
    assert headers[b"server"] == b"devserve"


def test_generator_is_chunked_and_closed() -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"one "
            yield b""
            yield b"two"

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [])
        return Body()

    wire, _ = _call(app)
    response, body, complete = wire.parsed()
    assert dict(response.headers)[b"transfer-encoding"] == b"chunked"
    assert (body, complete, closed) == (b"one two", True, [True])


def test_exc_info_before_headers_are_sent_replaces_them() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("X-First", "1")])
        try:
            raise KeyError("x")
        except KeyError:
            start_response("500 Internal Server Error", [("X-Second", "1")], sys.exc_info())
        return [b"replaced"]

    wire, _ = _call(app)
    response, body, _ = wire.parsed()
    assert response.status_code == 500 and body == b"replaced"
    assert b"x-first" not in dict(response.headers)


def test_exc_info_after_headers_are_sent_is_reraised_and_close_still_runs() -> None:
    closed: list[bool] = []

    class Body:
        def __init__(self, start_response: Any) -> None:
            self.start_response = start_response

        def __iter__(self) -> Iterator[bytes]:
            yield b"partial"
            try:
                raise KeyError("late")
            except KeyError:
                self.start_response("500 Internal Server Error", [], sys.exc_info())
            yield b"never"

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [])
        return Body(start_response)

    with pytest.raises(KeyError, match="late"):
        _call(app)
    assert closed == [True]


def test_start_response_twice_without_exc_info_is_an_error() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b""]

    with pytest.raises(AssertionError):
        _call(app)


def test_write_callable_and_head_request() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Length", "9")])
        write(b"abc")
        return [b"def", b"ghi"]

    wire, response = _call(app)
    assert wire.parsed()[1:] == (b"abcdefghi", True)
    wire, response = _call(app, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    parsed, body, complete = wire.parsed(b"HEAD")
    assert (body, complete, response.bytes_sent) == (b"", True, 9)
    assert dict(parsed.headers)[b"content-length"] == b"9"


def test_file_wrapper_iterates_in_blocks_and_closes() -> None:
    fh = io.BytesIO(b"x" * 10)
    wrapper = FileWrapper(fh, 4)
    assert list(wrapper) == [b"xxxx", b"xxxx", b"xx"]
    wrapper.close()  # type: ignore[attr-defined]
    assert fh.closed


def test_hop_by_hop_headers_are_dropped_and_connection_close_honoured() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Transfer-Encoding", "chunked"), ("Connection", "close")])
        return [b"x"]

    wire, response = _call(app)
    parsed, body, _ = wire.parsed()
    headers = dict(parsed.headers)
    assert b"transfer-encoding" not in headers and headers[b"connection"] == b"close"
    assert response.force_close and body == b"x"
