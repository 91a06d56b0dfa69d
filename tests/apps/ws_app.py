"""The plain ASGI 3 WebSocket test app the integration tests run through the real server.

WebSocket routes:

- ``/echo?key=K``         accepts (choosing the first offered subprotocol it supports:
                          ``chat.v2``, ``chat.v1``), echoes text as text and bytes as bytes;
                          the ``websocket.disconnect`` it receives is recorded under *K*
- ``/close?code=C&reason=R``  accepts, then closes with *C* and *R*
- ``/close-before-accept``    ``websocket.close`` before accepting (server answers 403)
- ``/raise-before-accept``    raises before accepting (500)
- ``/raise-after-accept``     accepts, waits for one message, raises (close 1011)
- ``/bad-accept?case=N``      ``websocket.accept`` with invalid header *N* (see BAD_HEADERS),
                              or with ``case=subprotocol`` a subprotocol nobody offered
- ``/deny``               ``websocket.http.response.start`` 401 with a header and a body sent in
                          two ``websocket.http.response.body`` parts
- ``/deny-then-raise``    starts a 401 denial, sends part of its body, then raises
- ``/hold?key=K``         accepts and only waits for the disconnect (recorded under *K*)
- ``/slow-accept?delay=S&key=K``  sleeps *S* seconds before accepting, then echoes

HTTP routes:

- ``/seen?key=K``  JSON list of the ``websocket.disconnect`` messages recorded under *K*
- anything else    200 ``http <METHOD> <path> upgrade=<Upgrade header>`` (what a client sees
                   for an upgrade request under ``--ws none``)

The recorded disconnects live in this worker's memory, so tests use ``--workers 1``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SUPPORTED_SUBPROTOCOLS = ("chat.v2", "chat.v1")
BAD_HEADERS: dict[str, tuple[bytes, bytes]] = {
    "crlf": (b"x-injected", b"ok\r\nset-cookie: evil=1"),
    "lf": (b"x-injected", b"ok\nx-evil: 1"),
    "nul": (b"x-nul", b"a\x00b"),
    "space-in-name": (b"bad name", b"value"),
    "colon-in-name": (b"x-a:b", b"value"),
    "empty-name": (b"", b"value"),
}
SEEN: dict[str, list[dict[str, Any]]] = {}


def _query(scope: Scope) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}


def _record(key: str | None, message: Message) -> None:
    if key:
        SEEN.setdefault(key, []).append(
            {"code": message.get("code"), "reason": message.get("reason")})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http":
        await _http(scope, receive, send)
    elif scope["type"] == "websocket":
        await _websocket(scope, receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _http(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["path"] == "/seen":
        body = json.dumps(SEEN.get(_query(scope).get("key", ""), [])).encode()
        content_type = b"application/json"
    else:
        upgrade = dict(scope["headers"]).get(b"upgrade", b"-").decode("latin-1")
        body = f"http {scope['method']} {scope['path']} upgrade={upgrade}".encode()
        content_type = b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _echo_loop(receive: Receive, send: Send, key: str | None) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            _record(key, message)
            return
        if message.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        else:
            await send({"type": "websocket.send", "text": message["text"]})


async def _websocket(scope: Scope, receive: Receive, send: Send) -> None:
    path = scope["path"]
    query = _query(scope)
    key = query.get("key")
    connect = await receive()
    assert connect["type"] == "websocket.connect", connect
    if path == "/echo":
        offered = scope.get("subprotocols") or []
        chosen = next((p for p in offered if p in SUPPORTED_SUBPROTOCOLS), None)
        await send({"type": "websocket.accept", "subprotocol": chosen})
        await _echo_loop(receive, send, key)
    elif path == "/close":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": int(query.get("code", "1000")),
                    "reason": query.get("reason", "")})
        _record(key, await receive())
    elif path == "/close-before-accept":
        await send({"type": "websocket.close", "code": 1008})
    elif path == "/raise-before-accept":
        raise RuntimeError("ws_app: failing before accept (expected by the test)")
    elif path == "/raise-after-accept":
        await send({"type": "websocket.accept"})
        await receive()
        raise RuntimeError("ws_app: failing after accept (expected by the test)")
    elif path == "/bad-accept":
        case = query.get("case", "")
        if case == "subprotocol":
            await send({"type": "websocket.accept", "subprotocol": "never-offered"})
        else:
            await send({"type": "websocket.accept", "headers": [BAD_HEADERS[case]]})
        await _echo_loop(receive, send, key)  # only reached if the server let it through
    elif path == "/deny":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"www-authenticate", b'Bearer realm="ws"')]})
        await send({"type": "websocket.http.response.body", "body": b"denied: ",
                    "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"no token"})
    elif path == "/deny-then-raise":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
        await send({"type": "websocket.http.response.body", "body": b"partial ",
                    "more_body": True})
        raise RuntimeError("ws_app: failing during a denial response (expected by the test)")
    elif path == "/hold":
        await send({"type": "websocket.accept"})
        _record(key, await receive())
    elif path == "/slow-accept":
        await asyncio.sleep(float(query.get("delay", "0.5")))
        await send({"type": "websocket.accept"})
        await _echo_loop(receive, send, key)
    else:
        await send({"type": "websocket.close", "code": 1008})
