"""The general-purpose ASGI 3 test app the integration tests run through the real server.

Routes (relative to ``root_path``, so ``--root-path`` needs no special casing in the tests):

- ``/``                    ``hello`` (text/plain, explicit content-length)
- ``/echo``                the request body back; ``x-method`` / ``x-body-length`` headers
- ``/scope``               JSON view of the request scope (path, root_path, client, state, ...)
- ``/lifespan``            JSON: which lifespan messages this worker's app received
- ``/mutate-state``        sets ``scope["state"]["mutated"]``; the next request must not see it
- ``/slow?s=1&marker=P``   writes file *P* (if given) when it starts, sleeps *s*, answers
- ``/error``               raises before the response started
- ``/error-after-start``   promises 100 bytes, sends 10, then raises
- ``/slow-upload?delay=D`` reads the body sleeping *D* per receive(); JSON with the size of
                           every receive() result, the total and the sha256
- ``/wait-disconnect?key=K`` reads the body, then waits on receive() and records the message
- ``/disconnects?key=K``   JSON: whether ``/wait-disconnect`` is waiting, and what it received
- ``/stream?n=3``          a chunked response of *n* parts
- ``/stream-forever?key=K`` streams a tick every 20 ms (up to ``limit``, 500) and records in
                           ``/disconnects?key=K`` whether send() raised OSError (ASGI 2.4)
- anything else            404 ``not found: <path>``

Lifespan: startup puts ``started``/``pid`` into the state; shutdown writes ``shutdown`` to the
file named by the ``ECHO_APP_SHUTDOWN_MARKER`` environment variable (if set).
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

LIFESPAN_MESSAGES: list[str] = []
DISCONNECTS: dict[str, dict[str, Any]] = {}
SHUTDOWN_MARKER_ENV = "ECHO_APP_SHUTDOWN_MARKER"


async def _lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        LIFESPAN_MESSAGES.append(message["type"])
        if message["type"] == "lifespan.startup":
            scope["state"]["started"] = "yes"
            scope["state"]["pid"] = os.getpid()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            marker = os.environ.get(SHUTDOWN_MARKER_ENV)
            if marker:
                Path(marker).write_text("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(send: Send, status: int, body: bytes,
                  content_type: bytes = b"text/plain; charset=utf-8",
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            *(headers or []),
        ],
    })
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, data: Any, status: int = 200) -> None:
    await respond(send, status, json.dumps(data).encode(), b"application/json")


async def read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise RuntimeError(f"unexpected {message['type']} while reading the body")
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def _scope_view(scope: Scope) -> dict[str, Any]:
    return {
        "type": scope["type"],
        "http_version": scope["http_version"],
        "method": scope["method"],
        "scheme": scope["scheme"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "root_path": scope.get("root_path", ""),
        "query_string": scope["query_string"].decode("latin-1"),
        "client": list(scope["client"]) if scope.get("client") else None,
        "server": list(scope["server"]) if scope.get("server") else None,
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
        "has_state": "state" in scope,
        "state": scope.get("state"),
    }


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    if scope["type"] != "http":
        return
    root = scope.get("root_path", "")
    path: str = scope["path"]
    route = path[len(root):] if root and path.startswith(root) else path
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}

    if route == "/":
        await respond(send, 200, b"hello")
    elif route == "/echo":
        body = await read_body(receive)
        await respond(send, 200, body, b"application/octet-stream", [
            (b"x-method", scope["method"].encode()),
            (b"x-body-length", str(len(body)).encode()),
        ])
    elif route == "/scope":
        await read_body(receive)
        await respond_json(send, _scope_view(scope))
    elif route == "/lifespan":
        await respond_json(send, {"messages": LIFESPAN_MESSAGES})
    elif route == "/mutate-state":
        scope["state"]["mutated"] = True
        await respond(send, 200, b"mutated")
    elif route == "/slow":
        marker = query.get("marker")
        if marker:
            Path(marker).write_text("started")
        await asyncio.sleep(float(query.get("s", "1")))
        await respond(send, 200, b"slow done")
    elif route == "/error":
        raise RuntimeError("boom-secret-detail")
    elif route == "/error-after-start":
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"100")],
        })
        await send({"type": "http.response.body", "body": b"0123456789", "more_body": True})
        raise RuntimeError("boom after start")
    elif route == "/slow-upload":
        delay = float(query.get("delay", "0.01"))
        sizes: list[int] = []
        digest = hashlib.sha256()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise RuntimeError(f"unexpected {message['type']} during upload")
            chunk = message.get("body", b"")
            sizes.append(len(chunk))
            digest.update(chunk)
            if not message.get("more_body", False):
                break
            await asyncio.sleep(delay)
        await respond_json(send, {
            "total": sum(sizes), "sizes": sizes, "sha256": digest.hexdigest(),
        })
    elif route == "/wait-disconnect":
        key = query.get("key", "")
        record: dict[str, Any] = {"waiting": False, "message": None}
        DISCONNECTS[key] = record
        await read_body(receive)
        record["waiting"] = True
        message = await receive()
        record["message"] = message["type"]
    elif route == "/disconnects":
        await respond_json(send, DISCONNECTS.get(query.get("key", ""),
                                                 {"waiting": False, "message": None}))
    elif route == "/stream-forever":
        key = query.get("key", "")
        record = {"waiting": True, "message": None}
        DISCONNECTS[key] = record
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        })
        try:
            for i in range(int(query.get("limit", "500"))):
                await send({"type": "http.response.body", "body": b"tick %d\n" % i,
                            "more_body": True})
                await asyncio.sleep(0.02)
        except OSError as exc:  # ASGI spec 2.4: send() on a closed connection raises
            record["message"] = f"send raised {type(exc).__name__}"
            raise
        record["message"] = "limit reached"
        await send({"type": "http.response.body", "body": b""})
    elif route == "/stream":
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        })
        for i in range(int(query.get("n", "3"))):
            await send({"type": "http.response.body", "body": f"part {i}\n".encode(),
                        "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await respond(send, 404, f"not found: {route}".encode())
