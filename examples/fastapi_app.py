"""A small FastAPI app exercising what a dev server must get right: JSON, path/query params,
request bodies, lifespan state, streaming and WebSocket.

Run it with ``devserve fastapi_app:app --app-dir examples``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypedDict

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse


class State(TypedDict):
    """Lifespan state; the server copies it into every request's ``request.state``."""

    started_at: float
    greeting: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[State]:
    """Yield state so handlers can prove the server ran startup before serving them."""
    yield {"started_at": time.time(), "greeting": "state from lifespan"}


app = FastAPI(title="devserve FastAPI example", lifespan=lifespan)


@app.get("/")
async def root() -> dict[str, str]:
    return {"message": "Hello from FastAPI"}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None) -> dict[str, Any]:
    return {"item_id": item_id, "q": q}


@app.post("/echo")
async def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


@app.get("/state")
async def read_state(request: Request) -> dict[str, Any]:
    """Reads what ``lifespan`` yielded; a server that skips lifespan fails here."""
    return {
        "greeting": request.state.greeting,
        "uptime_s": round(time.time() - request.state.started_at, 3),
    }


async def _chunks(count: int) -> AsyncIterator[bytes]:
    for i in range(count):
        yield f"chunk {i}\n".encode()
        await asyncio.sleep(0.05)


@app.get("/stream")
async def stream(count: int = 5) -> StreamingResponse:
    """A chunked response whose parts arrive over time, not in one write."""
    return StreamingResponse(_chunks(count), media_type="text/plain")


@app.websocket("/ws")
async def ws_echo(websocket: WebSocket) -> None:
    """Echo each text message back until the client disconnects."""
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(text)
    except WebSocketDisconnect:
        pass
