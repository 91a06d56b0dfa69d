"""Browser live reload: a script injected into HTML pages listens on an SSE channel.

- ``/__devserve__/livereload`` streams ``hello`` (the serving generation and the current reload
  error, if any) and later ``failed`` events. A page whose generation differs from the one in
  ``hello`` reloads itself; a ``failed`` event shows an overlay with the error and file:line.
- When a generation drains, its channel streams end *first* (the hub closes them), so a browser
  tab can never hold a reload up; EventSource reconnects to the new generation at once.
- ``refresh`` events need no new generation: ``{"kind": "css", "paths": [...]}`` swaps the
  matching stylesheets in open pages without reloading them (a cache-busting query on each
  ``<link rel=stylesheet>`` with an edited file's name, or on all of them when none matches);
  ``{"kind": "page"}`` reloads the page (a template, a script or an image changed).
- Only ``text/html`` responses without a content-encoding are touched (script before
  ``</body>``, ``content-length`` fixed); every other response passes through byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

from devserve.asgi.types import ASGIApp, Message, Receive, Scope, Send
from devserve.lifecycle import (
    BrowserRefresh,
    Event,
    GenerationPromoted,
    ReloadCompleted,
    ReloadFailed,
    ServerStopping,
)

PREFIX = "/__devserve__/"
STREAM_PATH = PREFIX + "livereload"
SCRIPT_PATH = PREFIX + "livereload.js"

CLIENT_JS = (Path(__file__).parent / "livereload.js").read_bytes()


class LiveReloadHub:
    """Thread-safe fan-out to the SSE streams of every generation's loop; also a collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any], int]] = []
        self.error: dict[str, Any] | None = None
        self.generation = 0
        self.closed_below = 0  # generations below this are draining: their streams end now

    # LifecycleCollector: in thread mode the hub hears the Supervisor directly.
    def emit(self, event: Event) -> None:
        if isinstance(event, GenerationPromoted):
            self.generation = event.generation
            self.close_generations_before(event.generation)
        elif isinstance(event, ReloadCompleted):
            self.error = None
        elif isinstance(event, ServerStopping):
            self.close_generations_before(sys.maxsize)  # browser streams never hold a stop
        elif isinstance(event, BrowserRefresh):
            self.refresh(event.kind, list(event.paths))
        elif isinstance(event, ReloadFailed):
            self.report_error({"error": event.error, "location": event.location,
                               "traceback": event.traceback})

    def subscribe(self, generation: int) -> asyncio.Queue[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        with self._lock:
            self._streams.append((asyncio.get_running_loop(), queue, generation))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Any]) -> None:
        with self._lock:
            self._streams = [s for s in self._streams if s[1] is not queue]

    def report_error(self, error: dict[str, Any]) -> None:
        self.error = error
        self._send(lambda gen: True, ("failed", error))

    def refresh(self, kind: str, paths: list[str]) -> None:
        """Tell every open page to swap stylesheets (``kind="css"``) or reload (``"page"``)."""
        self._send(lambda gen: True, ("refresh", {"kind": kind, "paths": paths}))

    def close_generations_before(self, generation: int) -> None:
        self.closed_below = max(self.closed_below, generation)
        self._send(lambda gen: gen < generation, ("close", None))

    def _send(self, which: Any, message: tuple[str, Any]) -> None:
        with self._lock:
            targets = [(loop, q) for loop, q, gen in self._streams if which(gen)]
        for loop, queue in targets:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, message)
            except RuntimeError:
                pass  # that loop is closed: its stream is gone already


class LiveReloadMiddleware:
    """ASGI wrapper applied to every generation's app when ``--livereload`` is on."""

    def __init__(self, app: ASGIApp, hub: LiveReloadHub, generation: int) -> None:
        self.app = app
        self.hub = hub
        self.generation = generation
        self.tag = (
            b'<script src="' + SCRIPT_PATH.encode() + b'" data-generation="'
            + str(generation).encode() + b'"></script>'
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith(PREFIX):
            if path == STREAM_PATH:
                await self._stream(receive, send)
                return
            if path == SCRIPT_PATH:
                await _respond(send, 200, b"application/javascript", CLIENT_JS)
                return
        await self.app(scope, receive, _Injector(send, self.tag))

    async def _stream(self, receive: Receive, send: Send) -> None:
        queue = self.hub.subscribe(self.generation)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
            ]})
            hello = {"generation": self.generation, "error": self.hub.error}
            await send({"type": "http.response.body", "more_body": True,
                        "body": b"retry: 100\nevent: hello\ndata: " + _json(hello) + b"\n\n"})
            if self.generation < self.hub.closed_below:
                # A reconnect that reached a draining generation (a kept-alive connection):
                # end at once so the browser retries and lands on the new one.
                await send({"type": "http.response.body", "body": b""})
                return
            disconnect = asyncio.ensure_future(_wait_disconnect(receive))
            try:
                while True:
                    getter = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait({getter, disconnect},
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if getter not in done:
                        getter.cancel()
                        return
                    kind, data = getter.result()
                    if kind == "close":
                        break
                    await send({"type": "http.response.body", "more_body": True,
                                "body": b"event: " + kind.encode() + b"\ndata: " + _json(data)
                                + b"\n\n"})
            finally:
                disconnect.cancel()
            await send({"type": "http.response.body", "body": b""})
        finally:
            self.hub.unsubscribe(queue)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _Injector:
    """Wraps ``send``: buffers an HTML response to add the script; passes others through."""

    def __init__(self, send: Send, tag: bytes) -> None:
        self.send = send
        self.tag = tag
        self.start: Message | None = None
        self.inject = False
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
            ctype = next((v for k, v in headers if k == b"content-type"), b"")
            encoded = any(k == b"content-encoding" for k, _ in headers)
            self.inject = ctype.lower().startswith(b"text/html") and not encoded
            if not self.inject:
                await self.send(message)
                return
            self.start = {**message, "headers": headers}
            return
        if kind == "http.response.body" and self.inject:
            self.chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = _inject(b"".join(self.chunks), self.tag)
            assert self.start is not None
            headers = [(k, v) for k, v in self.start["headers"] if k != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await self.send({**self.start, "headers": headers})
            await self.send({"type": "http.response.body", "body": body})
            return
        await self.send(message)


def _inject(body: bytes, tag: bytes) -> bytes:
    index = body.lower().rfind(b"</body>")
    if index < 0:
        return body + tag
    return body[:index] + tag + body[index:]


def _json(data: Any) -> bytes:
    return json.dumps(data).encode()


async def _respond(send: Send, status: int, ctype: bytes, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", ctype), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-cache"),
    ]})
    await send({"type": "http.response.body", "body": body})
