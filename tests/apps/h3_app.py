"""ASGI app for the HTTP/3 tests (and the reload test copies it and edits ``VERSION``).

Routes: ``/`` hello · ``/version`` VERSION · ``/scope`` JSON (http_version, scheme, pid,
headers) · ``/echo`` the body's size and sha256 as JSON · ``/sleep?s=N`` answers ``slept``
after *N* seconds; with ``announce=T`` it first prints ``h3_app: sleep T started`` (so a test
knows the request is in the app), with ``split=1`` it sends the head and ``sl`` before sleeping
and ``ept`` after · ``/wait-disconnect`` records ``http.disconnect`` under ``?key=K``, read back
from ``/disconnects?key=K``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from typing import Any
from urllib.parse import parse_qs

VERSION = "v1"
DISCONNECTS: dict[str, str] = {}


async def respond(send: Any, status: int, body: bytes, ctype: bytes = b"text/plain") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if path == "/":
        await respond(send, 200, b"hello")
    elif path == "/version":
        await respond(send, 200, VERSION.encode())
    elif path == "/scope":
        await respond(send, 200, json.dumps({
            "http_version": scope["http_version"], "scheme": scope["scheme"],
            "pid": os.getpid(), "client": scope["client"],
            "headers": [[n.decode(), v.decode()] for n, v in scope["headers"]],
        }).encode(), b"application/json")
    elif path == "/echo":
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            digest.update(chunk)
            if not message.get("more_body"):
                break
        await respond(send, 200, json.dumps({"size": size, "sha256": digest.hexdigest()})
                      .encode(), b"application/json")
    elif path == "/sleep":
        split = query.get("split") == "1"
        if split:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"sl", "more_body": True})
        if "announce" in query:
            print(f"h3_app: sleep {query['announce']} started", flush=True)
        await asyncio.sleep(float(query.get("s", "1")))
        if split:
            await send({"type": "http.response.body", "body": b"ept"})
        else:
            await respond(send, 200, b"slept")
    elif path == "/wait-disconnect":
        key = query.get("key", "")
        DISCONNECTS[key] = "waiting"
        while (await receive())["type"] != "http.disconnect":
            pass
        DISCONNECTS[key] = "http.disconnect"
    elif path == "/disconnects":
        await respond(send, 200, DISCONNECTS.get(query.get("key", ""), "none").encode())
    else:
        await respond(send, 404, b"not found")
