"""The WebSocket-over-HTTP/2 test app: ``tests/apps/ws_app.py`` plus one route.

- ``/scope`` (websocket)  accepts with header ``x-scope: yes`` and sends the scope's
  ``http_version``, ``scheme``, ``path``, ``query_string`` and ``subprotocols`` as JSON text
- ``/ticks`` (websocket)  accepts, then sends ``tick N`` every 50 ms until disconnected
- everything else is ``ws_app``'s (echo, close, close-before-accept, deny, hold, seen, ...)
"""

from __future__ import annotations

import asyncio
import json

from ws_app import Receive, Scope, Send
from ws_app import app as ws_app


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket" and scope["path"] == "/scope":
        await receive()
        await send({"type": "websocket.accept", "headers": [(b"x-scope", b"yes")]})
        info = {k: scope[k] for k in ("http_version", "scheme", "path", "subprotocols")}
        info["query_string"] = scope["query_string"].decode("latin-1")
        await send({"type": "websocket.send", "text": json.dumps(info)})
        await receive()
    elif scope["type"] == "websocket" and scope["path"] == "/ticks":
        await receive()
        await send({"type": "websocket.accept"})
        waiter = asyncio.ensure_future(receive())
        n = 0
        while not waiter.done():
            await send({"type": "websocket.send", "text": f"tick {n}"})
            n += 1
            await asyncio.wait([waiter], timeout=0.05)
    else:
        await ws_app(scope, receive, send)
