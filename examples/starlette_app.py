"""A plain Starlette app: text, JSON, request-body upload, lifespan state and a long-lived
Server-Sent Events stream (``/sse``), which reload tests use to check that an open stream
never blocks a reload.

Run it with ``devserve starlette_app:app --app-dir examples``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

SSE_INTERVAL_S = 0.5


class State(TypedDict):
    """Lifespan state; the server copies it into every request's ``request.state``."""

    started_at: float


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[State]:
    yield {"started_at": time.time()}


async def homepage(request: Request) -> Response:
    return PlainTextResponse("Hello from Starlette")


async def json_endpoint(request: Request) -> Response:
    return JSONResponse(
        {
            "message": "Hello from Starlette",
            "uptime_s": round(time.time() - request.state.started_at, 3),
        }
    )


async def upload(request: Request) -> Response:
    """Count the body as it streams in, so large uploads never sit in memory whole."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return JSONResponse({"bytes": size})


async def _ticks() -> AsyncIterator[str]:
    # No disconnect polling here: StreamingResponse cancels the iterator when the client
    # leaves or the server closes the connection, which is exactly what reload tests need.
    n = 0
    while True:
        yield f"data: tick {n}\n\n"
        n += 1
        await asyncio.sleep(SSE_INTERVAL_S)


async def sse(request: Request) -> Response:
    """Endless event stream: ends only when the client leaves or the server closes it."""
    return StreamingResponse(
        _ticks(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache"},
    )


app = Starlette(
    routes=[
        Route("/", homepage),
        Route("/json", json_endpoint),
        Route("/upload", upload, methods=["POST"]),
        Route("/sse", sse),
    ],
    lifespan=lifespan,
)
