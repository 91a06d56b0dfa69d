"""An app that keeps killing the worker that runs it (a crash loop), for the restart-budget tests.

A ``SystemExit`` raised from an event-loop callback stops the worker's loop: a real crash in both
thread and process mode.

- Lifespan startup schedules that crash 0.3 s later, so every worker that runs lifespan (every
  process worker; slot 0 in thread mode) dies shortly after it became ready.
- Every HTTP request is answered (``doomed``) and then crashes its worker the same way, which also
  reaches thread-mode workers that share slot 0's lifespan instead of running their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CRASH_AFTER = 0.3


def _die() -> None:
    raise SystemExit("sup_crash: worker loop stopped on purpose")


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                asyncio.get_running_loop().call_later(CRASH_AFTER, _die)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"6")],
    })
    await send({"type": "http.response.body", "body": b"doomed"})
    asyncio.get_running_loop().call_soon(_die)
