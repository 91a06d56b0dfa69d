"""LiveReloadMiddleware, LiveReloadHub and ``_inject`` driven by a real asyncio loop and real ASGI
messages: a tiny real ASGI app behind the middleware, a ``send`` that records what would go on
the wire, a ``receive`` fed from a queue. No mocks."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from devserve.lifecycle import GenerationPromoted, ReloadCompleted, ReloadFailed
from devserve.reload.livereload import (
    CLIENT_JS,
    SCRIPT_PATH,
    STREAM_PATH,
    LiveReloadHub,
    LiveReloadMiddleware,
    _inject,
)

Message = dict[str, Any]
TIMEOUT = 5.0


def tag(generation: int) -> bytes:
    return (b'<script src="' + SCRIPT_PATH.encode() + b'" data-generation="'
            + str(generation).encode() + b'"></script>')


def make_app(status: int, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
             ) -> Callable[..., Awaitable[None]]:
    """A real ASGI app answering with the given head and body chunks."""

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": list(headers)})
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk,
                        "more_body": i < len(chunks) - 1})

    return app


def http_scope(path: str = "/") -> Message:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": [(b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}


async def call(app: Any, scope: Message) -> list[Message]:
    sent: list[Message] = []
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    inbox.put_nowait({"type": "http.request", "body": b"", "more_body": False})

    async def receive() -> Message:
        return await inbox.get()

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), TIMEOUT)
    return sent


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def head(messages: list[Message]) -> dict[bytes, bytes]:
    return {bytes(k).lower(): bytes(v) for k, v in messages[0]["headers"]}


def body(messages: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


# --- _inject -------------------------------------------------------------------------------------


def test_inject_before_last_closing_body_case_insensitive() -> None:
    page = b"<html><body><p>a</p><!-- </body> in a comment --></BODY></html>"
    out = _inject(page, b"<s/>")
    assert out == b"<html><body><p>a</p><!-- </body> in a comment --><s/></BODY></html>"


def test_inject_appends_without_closing_body() -> None:
    assert _inject(b"<p>fragment</p>", b"<s/>") == b"<p>fragment</p><s/>"
    assert _inject(b"", b"<s/>") == b"<s/>"


# --- script injection through the middleware ------------------------------------------------------


def test_html_gets_script_and_correct_content_length() -> None:
    page = b"<html><body><p id='msg'>v1</p></body></html>"
    app = make_app(200, [(b"content-type", b"text/html; charset=utf-8"),
                         (b"content-length", str(len(page)).encode()),
                         (b"x-custom", b"kept")], [page])
    sent = run(call(LiveReloadMiddleware(app, LiveReloadHub(), 7), http_scope()))
    expected = page.replace(b"</body>", tag(7) + b"</body>")
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200
    assert body(sent) == expected
    h = head(sent)
    assert h[b"content-length"] == str(len(expected)).encode()
    assert h[b"x-custom"] == b"kept"
    assert [k for k, _ in sent[0]["headers"]].count(b"content-length") == 1
    assert sent[-1].get("more_body", False) is False


def test_streamed_html_is_buffered_and_injected_once() -> None:
    chunks = [b"<html><bo", b"dy>hello", b"</bo", b"dy></html>"]
    app = make_app(200, [(b"Content-Type", b"TEXT/HTML")], chunks)
    sent = run(call(LiveReloadMiddleware(app, LiveReloadHub(), 3), http_scope()))
    assert body(sent) == b"<html><body>hello" + tag(3) + b"</body></html>"
    assert head(sent)[b"content-length"] == str(len(body(sent))).encode()
    assert body(sent).count(b"data-generation") == 1


@pytest.mark.parametrize(
    ("headers", "chunks"),
    [
        ([(b"content-type", b"application/json"), (b"content-length", b"11")], [b'{"a": "b"}\n']),
        ([(b"content-type", b"text/plain; charset=utf-8")], [b"</body>", b" plain ", b""]),
        ([(b"content-type", b"application/octet-stream")], [bytes(range(256))]),
        ([(b"content-type", b"text/html"), (b"content-encoding", b"gzip")],
         [b"\x1f\x8b\x08\x00 not really gzip </body>"]),
        ([], [b"<html><body>no content type</body></html>"]),
    ],
    ids=["json", "text-chunked", "binary", "html-gzip", "no-ctype"],
)
def test_non_html_passes_through_untouched(headers: list[tuple[bytes, bytes]],
                                           chunks: list[bytes]) -> None:
    app = make_app(201, headers, chunks)
    direct = run(call(app, http_scope()))
    wrapped = run(call(LiveReloadMiddleware(app, LiveReloadHub(), 1), http_scope()))
    assert wrapped == direct


def test_livereload_js_is_served() -> None:
    async def never(scope: Message, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not see devserve's own paths")

    sent = run(call(LiveReloadMiddleware(never, LiveReloadHub(), 1), http_scope(SCRIPT_PATH)))
    assert sent[0]["status"] == 200
    h = head(sent)
    assert h[b"content-type"] == b"application/javascript"
    assert h[b"content-length"] == str(len(CLIENT_JS)).encode()
    assert body(sent) == CLIENT_JS
    assert b"EventSource" in CLIENT_JS and b"devserve-error-overlay" in CLIENT_JS


def test_other_prefixed_paths_reach_the_app() -> None:
    app = make_app(404, [(b"content-type", b"text/plain")], [b"app saw it"])
    sent = run(call(LiveReloadMiddleware(app, LiveReloadHub(), 1),
                    http_scope("/__devserve__/other")))
    assert sent[0]["status"] == 404 and body(sent) == b"app saw it"


def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        message = await receive()
        await send({"type": "echo", "got": message["type"]})

    async def drive(scope_type: str) -> list[Message]:
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": f"{scope_type}.startup" if scope_type == "lifespan"
                    else "websocket.connect"}

        async def send(message: Message) -> None:
            sent.append(message)

        mw = LiveReloadMiddleware(app, LiveReloadHub(), 1)
        await mw({"type": scope_type, "path": STREAM_PATH}, receive, send)
        return sent

    assert run(drive("lifespan")) == [{"type": "echo", "got": "lifespan.startup"}]
    assert run(drive("websocket")) == [{"type": "echo", "got": "websocket.connect"}]
    assert seen == ["lifespan", "websocket"]


# --- the SSE channel ------------------------------------------------------------------------------


class Stream:
    """One SSE request to the middleware running as a task; events parsed from the bytes sent."""

    def __init__(self, mw: LiveReloadMiddleware) -> None:
        self.mw = mw
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Message:
        async def receive() -> Message:
            return await self.inbox.get()

        async def send(message: Message) -> None:
            await self.sent.put(message)

        self.task = asyncio.ensure_future(self.mw(http_scope(STREAM_PATH), receive, send))
        return await asyncio.wait_for(self.sent.get(), TIMEOUT)

    async def message(self) -> Message:
        return await asyncio.wait_for(self.sent.get(), TIMEOUT)

    async def event(self) -> tuple[str, Any]:
        return _parse(await self.message())

    async def finished(self) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, TIMEOUT)


def test_stream_hello_carries_generation_and_no_error() -> None:
    async def scenario() -> None:
        hub = LiveReloadHub()
        s = Stream(LiveReloadMiddleware(make_app(200, [], [b""]), hub, 4))
        start = await s.start()
        assert start["status"] == 200
        h = {bytes(k): bytes(v) for k, v in start["headers"]}
        assert h[b"content-type"] == b"text/event-stream"
        assert h[b"cache-control"] == b"no-cache"
        first = await s.message()
        assert first["body"].startswith(b"retry: ")
        assert first["more_body"] is True
        kind, data = _parse(first)
        assert (kind, data) == ("hello", {"generation": 4, "error": None})
        s.inbox.put_nowait({"type": "http.disconnect"})
        await s.finished()
        assert hub._streams == []

    run(scenario())


def _parse(message: Message) -> tuple[str, Any]:
    text = message["body"].decode()
    fields = dict(line.split(": ", 1) for line in text.strip().splitlines()
                  if not line.startswith("retry"))
    return fields["event"], json.loads(fields["data"])


def test_failed_event_then_promotion_closes_old_streams_only() -> None:
    async def scenario() -> None:
        hub = LiveReloadHub()
        old = Stream(LiveReloadMiddleware(make_app(200, [], [b""]), hub, 1))
        await old.start()
        assert _parse(await old.message())[0] == "hello"

        hub.emit(ReloadFailed(generation=2, strategy="reimport", error="SyntaxError: bad",
                              location="/p/app.py:3", traceback="Traceback ..."))
        kind, data = await old.event()
        assert kind == "failed"
        assert data == {"error": "SyntaxError: bad", "location": "/p/app.py:3",
                        "traceback": "Traceback ..."}

        # A page connecting now learns about the error in its hello.
        late = Stream(LiveReloadMiddleware(make_app(200, [], [b""]), hub, 1))
        await late.start()
        assert _parse(await late.message()) == ("hello", {"generation": 1, "error": data})

        new = Stream(LiveReloadMiddleware(make_app(200, [], [b""]), hub, 2))
        await new.start()
        await new.message()
        hub.emit(ReloadCompleted(generation=2, strategy="reimport", phases={}))
        assert hub.error is None
        hub.emit(GenerationPromoted(generation=2))
        for s in (old, late):
            last = await s.message()
            assert last == {"type": "http.response.body", "body": b""}
            await s.finished()
        assert not new.task.done()  # type: ignore[union-attr]
        assert hub.generation == 2
        new.inbox.put_nowait({"type": "http.disconnect"})
        await new.finished()
        assert hub._streams == []

    run(scenario())


def test_hub_delivers_from_another_thread() -> None:
    """The Supervisor emits from its own thread; the stream lives on a worker's loop."""

    async def scenario() -> None:
        hub = LiveReloadHub()
        s = Stream(LiveReloadMiddleware(make_app(200, [], [b""]), hub, 5))
        await s.start()
        await s.message()
        t = threading.Thread(target=hub.report_error,
                             args=({"error": "E", "location": None, "traceback": None},))
        t.start()
        t.join(TIMEOUT)
        assert await s.event() == ("failed", {"error": "E", "location": None,
                                              "traceback": None})
        t = threading.Thread(target=hub.close_generations_before, args=(6,))
        t.start()
        t.join(TIMEOUT)
        await s.message()
        await s.finished()

    run(scenario())


def test_hub_survives_a_closed_loop() -> None:
    """A stream whose loop is gone (its generation's worker exited) never breaks the hub."""
    hub = LiveReloadHub()

    async def subscribe_only() -> None:
        hub.subscribe(1)

    run(subscribe_only())  # that loop is closed now, the subscription is left behind
    hub.report_error({"error": "x", "location": None, "traceback": None})
    hub.close_generations_before(2)
    assert hub.error == {"error": "x", "location": None, "traceback": None}
