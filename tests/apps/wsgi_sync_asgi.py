"""An ASGI app for ``--execution sync`` tests (named wsgi_* with the other SyncWorker apps).

Lifespan: startup stores ``{"answer": 42}`` in the state and, when ``LIFESPAN_LOG`` names a
file, appends ``startup``; shutdown appends ``shutdown``. ``/`` answers JSON with the request
state, the thread name and whether an event loop runs in that thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


def _log(line: str) -> None:
    path = os.environ.get("LIFESPAN_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")


async def app(scope: Scope, receive: Callable[[], Awaitable[Message]],
              send: Callable[[Message], Awaitable[None]]) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["answer"] = 42
                _log("startup")
                await send({"type": "lifespan.startup.complete"})
            else:
                _log("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await asyncio.sleep(0)
    payload = json.dumps({
        "state": dict(scope.get("state", {})),
        "thread": threading.current_thread().name,
        "body": len(body),
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})
