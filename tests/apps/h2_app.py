"""ASGI app for the HTTP/2 and TLS integration tests.

Routes:
- ``/``                      ``hello``
- ``/scope``                 JSON: http_version, scheme, path, extensions, worker pid
- ``/echo``                  the request body back
- ``/sleep?s=1&announce=T``  prints ``h2_app: sleep T started`` (if *T* is given: the test's
                             proof that the request is in the app), sleeps, answers ``slept``
- ``/trailers``              body ``data`` then trailers ``x-checksum: abc``, ``x-count: 1``
- ``/hold-upload?hold=2``    waits *hold* seconds before reading the body; JSON with the size,
                             sha256, and the worker's VmRSS (kB) before and after reading
- ``/wait-disconnect?key=K`` waits on receive() until ``http.disconnect``, records it
- ``/disconnects?key=K``     JSON: what ``/wait-disconnect`` recorded for *K*
- ``/rss``                   JSON: VmRSS (kB) of the worker process
- ``/stream-forever``        a ``tick`` every 20 ms (no content-length) until send() raises
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DISCONNECTS: dict[str, str] = {}


def vm_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


async def respond(send: Send, status: int, body: bytes,
                  content_type: bytes = b"text/plain; charset=utf-8") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, data: Any) -> None:
    await respond(send, 200, json.dumps(data).encode(), b"application/json")


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if path == "/":
        await respond(send, 200, b"hello")
    elif path == "/scope":
        await respond_json(send, {
            "http_version": scope["http_version"], "scheme": scope["scheme"],
            "path": path, "extensions": scope.get("extensions", {}), "pid": os.getpid(),
            "headers": [[n.decode(), v.decode()] for n, v in scope["headers"]],
        })
    elif path == "/echo":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await respond(send, 200, body, b"application/octet-stream")
    elif path == "/sleep":
        if "announce" in query:
            print(f"h2_app: sleep {query['announce']} started", flush=True)
        await asyncio.sleep(float(query.get("s", "1")))
        await respond(send, 200, b"slept")
    elif path == "/trailers":
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"content-type", b"text/plain"), (b"trailer", b"x-checksum")]})
        await send({"type": "http.response.body", "body": b"da", "more_body": True})
        await send({"type": "http.response.body", "body": b"ta"})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")],
                    "more_trailers": True})
        await send({"type": "http.response.trailers", "headers": [(b"x-count", b"1")]})
    elif path == "/hold-upload":
        before = vm_rss_kb()
        await asyncio.sleep(float(query.get("hold", "2")))
        digest = hashlib.sha256()
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            digest.update(chunk)
            if not message.get("more_body"):
                break
        await respond_json(send, {"size": size, "sha256": digest.hexdigest(),
                                  "rss_before_kb": before, "rss_after_kb": vm_rss_kb()})
    elif path == "/wait-disconnect":
        key = query.get("key", "")
        DISCONNECTS[key] = "waiting"
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                DISCONNECTS[key] = "http.disconnect"
                return
    elif path == "/disconnects":
        await respond_json(send, {"state": DISCONNECTS.get(query.get("key", ""))})
    elif path == "/stream-forever":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        while True:
            await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
            await asyncio.sleep(0.02)
    elif path == "/rss":
        await respond_json(send, {"rss_kb": vm_rss_kb(), "pid": os.getpid()})
    else:
        await respond(send, 404, b"not found")
