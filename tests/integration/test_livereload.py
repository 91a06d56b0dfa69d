"""Browser live reload at the HTTP level, through a real ``devserve --reload --livereload``
subprocess: script injection into HTML (with a correct content-length), every other response
byte-for-byte what the app sent, and the SSE channel (hello with the generation, the old
generation's stream ending on reload, ``failed`` events with file:line)."""

from __future__ import annotations

import gzip
import json
import queue
import re
import socket
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServerFactory, ServerProcess, wait_until

STREAM = "/__devserve__/livereload"
SCRIPT = "/__devserve__/livereload.js"
WAIT = 10.0
WATCHING_RE = r"Watching for changes in \d+ director"


def tag(generation: int) -> str:
    return f'<script src="{SCRIPT}" data-generation="{generation}"></script>'


def app_source(message: str) -> str:
    """An app with one HTML page and a handful of non-HTML responses of every framing."""
    return textwrap.dedent(f"""
        import gzip
        import json

        MESSAGE = {message!r}
        PAGE = ("<!doctype html><html><head><title>t</title></head><body>"
                "<p id='msg'>" + MESSAGE + "</p></body></html>").encode()
        GZ_PAGE = gzip.compress(b"<html><body>compressed</body></html>", mtime=0)

        async def respond(send, status, headers, *chunks):
            await send({{"type": "http.response.start", "status": status, "headers": headers}})
            for i, chunk in enumerate(chunks):
                await send({{"type": "http.response.body", "body": chunk,
                            "more_body": i < len(chunks) - 1}})

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            path = scope["path"]
            if path == "/":
                await respond(send, 200, [(b"content-type", b"text/html; charset=utf-8"),
                                          (b"content-length", str(len(PAGE)).encode())], PAGE)
            elif path == "/json":
                body = json.dumps({{"message": MESSAGE, "html": "</body>"}}).encode()
                await respond(send, 200, [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode())], body)
            elif path == "/text-chunked":
                await respond(send, 200, [(b"content-type", b"text/plain")],
                              b"part one </body> ", b"part two", b"")
            elif path == "/binary":
                body = bytes(range(256)) * 4
                await respond(send, 200, [(b"content-type", b"application/octet-stream"),
                                          (b"content-length", str(len(body)).encode())], body)
            elif path == "/gzip-html":
                await respond(send, 200, [(b"content-type", b"text/html"),
                                          (b"content-encoding", b"gzip"),
                                          (b"content-length", str(len(GZ_PAGE)).encode())],
                              GZ_PAGE)
            elif path == "/no-content":
                await respond(send, 204, [(b"x-kind", b"empty")], b"")
            elif path == "/redirect":
                await respond(send, 302, [(b"location", b"/"), (b"content-length", b"0")], b"")
            elif path == "/xhtml-like":
                body = b"<html><body>not text/html</body></html>"
                await respond(send, 200, [(b"content-type", b"application/xhtml+xml")], body)
            else:
                await respond(send, 404, [(b"content-type", b"text/plain")], b"not found")
    """)


def raw_get(server: ServerProcess, path: str) -> bytes:
    """The exact bytes on the wire for one GET (connection: close), with the Date line removed
    (it is the only thing allowed to differ between two servers)."""
    with socket.create_connection((server.host, server.port), timeout=WAIT) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {server.host}\r\n"
                     "Connection: close\r\n\r\n".encode())
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"date:")]
    return b"\r\n".join(lines) + sep + body


class EventStream(threading.Thread):
    """One EventSource-like connection: parsed events go into a queue; ``("END", reason)``
    is queued when the server ends the stream."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url + STREAM
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.headers: httpx.Headers | None = None
        self._client = httpx.Client(timeout=httpx.Timeout(WAIT, read=60.0))
        self.start()

    def run(self) -> None:
        reason = "closed cleanly"
        try:
            with self._client.stream("GET", self.url) as r:
                self.headers = r.headers
                fields: dict[str, str] = {}
                for line in r.iter_lines():
                    if line == "":
                        if "event" in fields:
                            self.events.put((fields["event"], json.loads(fields["data"])))
                        fields = {}
                        continue
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self.events.put(("END", reason))
            self._client.close()

    def next(self, timeout: float = WAIT) -> tuple[str, Any]:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event on {self.url} within {timeout}s") from None

    def close(self) -> None:
        self._client.close()


def start(start_server: ServerFactory, tmp_path: Path, *args: str,
          message: str = "v1") -> ServerProcess:
    (tmp_path / "app.py").write_text(app_source(message))
    server = start_server("app:app", "--reload", "--livereload", *args)
    server.wait_for(WATCHING_RE, WAIT)
    return server


# --- injection -----------------------------------------------------------------------------------


def test_html_gets_script_with_correct_content_length(tmp_path: Path,
                                                      start_server: ServerFactory) -> None:
    server = start(start_server, tmp_path)
    r = httpx.get(server.url + "/", timeout=WAIT)
    assert r.status_code == 200
    expected = ("<!doctype html><html><head><title>t</title></head><body><p id='msg'>v1</p>"
                + tag(1) + "</body></html>")
    assert r.text == expected
    assert r.headers["content-length"] == str(len(r.content))
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers.get_list("content-length") == [str(len(r.content))]

    js = httpx.get(server.url + SCRIPT, timeout=WAIT)
    assert js.status_code == 200
    assert js.headers["content-type"] == "application/javascript"
    assert js.headers["content-length"] == str(len(js.content))
    assert b"new EventSource(\"/__devserve__/livereload\")" in js.content
    assert b"devserve-error-overlay" in js.content


@pytest.mark.parametrize(
    "path",
    ["/json", "/text-chunked", "/binary", "/gzip-html", "/no-content", "/redirect",
     "/xhtml-like", "/missing", SCRIPT + "-not-ours"],
)
def test_non_html_is_byte_for_byte_identical(tmp_path: Path, start_server: ServerFactory,
                                             path: str) -> None:
    plain_dir, live_dir = tmp_path / "plain", tmp_path / "live"
    for d in (plain_dir, live_dir):
        d.mkdir()
        (d / "app.py").write_text(app_source("same"))
    plain = start_server("app:app", "--reload", cwd=plain_dir)
    live = start_server("app:app", "--reload", "--livereload", cwd=live_dir)
    without, with_ = raw_get(plain, path), raw_get(live, path)
    assert with_ == without
    assert b"data-generation" not in with_
    if path == "/gzip-html":  # still the app's own compressed bytes, decodable as sent
        body = with_.partition(b"\r\n\r\n")[2]
        assert gzip.decompress(body) == b"<html><body>compressed</body></html>"


def test_html_differs_only_by_the_script(tmp_path: Path, start_server: ServerFactory) -> None:
    plain_dir, live_dir = tmp_path / "plain", tmp_path / "live"
    for d in (plain_dir, live_dir):
        d.mkdir()
        (d / "app.py").write_text(app_source("same"))
    plain = start_server("app:app", "--reload", cwd=plain_dir)
    live = start_server("app:app", "--reload", "--livereload", cwd=live_dir)
    a, b = raw_get(plain, "/"), raw_get(live, "/")
    body_a, body_b = a.partition(b"\r\n\r\n")[2], b.partition(b"\r\n\r\n")[2]
    assert body_b == body_a.replace(b"</body>", tag(1).encode() + b"</body>")
    head_a = a.partition(b"\r\n\r\n")[0].replace(
        f"content-length: {len(body_a)}".encode(), f"content-length: {len(body_b)}".encode())
    assert b.partition(b"\r\n\r\n")[0] == head_a


# --- the SSE channel ------------------------------------------------------------------------------


def test_sse_hello_carries_the_generation(tmp_path: Path, start_server: ServerFactory) -> None:
    server = start(start_server, tmp_path)
    stream = EventStream(server.url)
    try:
        assert stream.next() == ("hello", {"generation": 1, "error": None})
        assert stream.headers is not None
        assert stream.headers["content-type"] == "text/event-stream"
        assert stream.headers["cache-control"] == "no-cache"
    finally:
        stream.close()


def wait_body(server: ServerProcess, needle: str, timeout: float = WAIT) -> str:
    last = ["<nothing yet>"]

    def served() -> str:
        try:
            last[0] = httpx.get(server.url + "/", timeout=WAIT).text
        except httpx.TransportError:
            last[0] = "<transport error>"
        return last[0] if needle in last[0] else ""

    return wait_until(served, timeout, f"{needle!r} served", interval=0.005,
                      detail=lambda: f"last {last[0]!r}\n{server.output}")


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_edit_ends_old_stream_and_reconnect_gets_new_generation(
        tmp_path: Path, start_server: ServerFactory, mode: str) -> None:
    server = start(start_server, tmp_path, "--worker-mode", mode)
    old = EventStream(server.url)
    try:
        assert old.next() == ("hello", {"generation": 1, "error": None})
        mark = len(server.lines)
        started = time.monotonic()
        (tmp_path / "app.py").write_text(app_source("v2"))
        kind, reason = old.next()
        ended_after = time.monotonic() - started
        assert kind == "END", (kind, reason)
        print(f"\n[livereload/{mode}] old stream ended {ended_after * 1000:.0f} ms after the "
              f"edit ({reason})")
        # The stream ended because generation 2 took over, not for some other reason.
        server.wait_for(r"Serving generation 2 with", WAIT, start=mark)
        assert ended_after < 5.0
    finally:
        old.close()
    new = EventStream(server.url)
    try:
        assert new.next() == ("hello", {"generation": 2, "error": None})
    finally:
        new.close()
    page = wait_body(server, ">v2<")
    assert tag(2) in page


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_syntax_error_sends_failed_event_with_location(
        tmp_path: Path, start_server: ServerFactory, mode: str) -> None:
    server = start(start_server, tmp_path, "--worker-mode", mode)
    app = tmp_path / "app.py"
    stream = EventStream(server.url)
    try:
        assert stream.next() == ("hello", {"generation": 1, "error": None})
        broken = app_source("v1").replace("MESSAGE = 'v1'", "MESSAGE = 'v1")
        line_no = broken.splitlines().index("MESSAGE = 'v1") + 1
        app.write_text(broken)
        kind, data = stream.next(15.0)
        assert kind == "failed", (kind, data, server.output)
        assert "SyntaxError" in data["error"], data
        assert data["location"] is not None and re.search(
            rf"app\.py:{line_no}$", data["location"]), data
        # The old generation keeps serving and its stream stays open.
        page = httpx.get(server.url + "/", timeout=WAIT).text
        assert ">v1<" in page and tag(1) in page
        assert stream.events.empty()
    finally:
        stream.close()

    # A page that connects now (e.g. a reload by hand) learns about the error in its hello.
    late = EventStream(server.url)
    try:
        kind, hello = late.next()
        assert kind == "hello" and hello["generation"] == 1, hello
        assert hello["error"] is not None and "SyntaxError" in hello["error"]["error"], hello
        assert re.search(rf"app\.py:{line_no}$", hello["error"]["location"] or ""), hello

        app.write_text(app_source("v2"))
        assert late.next()[0] == "END"
    finally:
        late.close()
    fixed = EventStream(server.url)
    try:
        assert fixed.next() == ("hello", {"generation": 2, "error": None})
    finally:
        fixed.close()
    assert tag(2) in wait_body(server, ">v2<")
