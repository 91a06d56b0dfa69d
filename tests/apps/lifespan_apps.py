"""Apps with unusual lifespan behaviour, one attribute each.

- ``failing_startup``: answers ``lifespan.startup`` with ``lifespan.startup.failed``.
- ``raising_startup``: raises while handling ``lifespan.startup`` (after receiving it).
- ``no_lifespan``: raises as soon as it is called with a lifespan scope, like an app that only
  knows HTTP; HTTP requests get ``ok``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FAILURE_MESSAGE = "database unreachable at db.invalid:5432"


async def _ok(send: Send) -> None:
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
    })
    await send({"type": "http.response.body", "body": b"ok"})


async def failing_startup(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": FAILURE_MESSAGE})
        return
    await _ok(send)


async def raising_startup(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        raise RuntimeError("cannot open the connection pool")
    await _ok(send)


async def no_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise ValueError(f"this app only speaks http, not {scope['type']!r}")
    await _ok(send)
