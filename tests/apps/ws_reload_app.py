"""WebSocket echo whose replies carry the code's version: ``PREFIX:<message>``.

``tests/integration/test_websocket_reload.py`` copies this file into a temporary ``--app-dir``
and rewrites the ``PREFIX = "v1"`` line before a SIGHUP, as a developer saving the file would;
a client that reconnects after the reload must then be answered by the new code.

``/slow?release=PATH`` holds the handshake (after logging ``slow accept: waiting``) until the
file *PATH* exists, so a test can keep a handshake in flight across the start of a drain.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

PREFIX = "v1"

Message = MutableMapping[str, Any]


async def app(scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Message]],
              send: Callable[[Message], Awaitable[None]]) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        body = PREFIX.encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        if scope["path"] == "/slow":
            marker = scope["query_string"].decode().split("release=", 1)[1]
            print("slow accept: waiting", file=sys.stderr, flush=True)
            while not os.path.exists(marker):
                await asyncio.sleep(0.01)
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": f"{PREFIX}:{message.get('text')}"})
