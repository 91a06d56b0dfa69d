"""ASGI app for the supervisor, reload and shutdown tests; also the template of the reloadable app.

Reload tests copy this file into a temporary ``--app-dir`` under another module name and rewrite
the two marked lines below (``VERSION`` and ``STARTUP_FAILS``) to simulate an edit; process
workers and thread-mode re-imports must then serve the new text.

Every response carries ``x-worker`` (``<process name>/<thread name>``: the worker generation and
slot are in ``devserve-g<G>-w<S>``), ``x-pid`` and ``x-version``.

Routes:

- ``/``                  the version text, e.g. ``v1``
- ``/slow?s=1&marker=P`` writes file *P* (if given) when it starts, sleeps *s*, answers ``slow v1``
- ``/sse``               ``text/event-stream`` that sends ``data: tick N`` every 50 ms until the
                         client goes away (it watches ``receive()`` for ``http.disconnect``)
- ``/kill``              SIGKILLs its own process (process workers only: a real crash)
- ``/crash``             answers ``crashing``, then stops its worker's event loop with a
                         ``SystemExit`` raised from a loop callback (a real crash in both modes)
- anything else          404

Lifespan: startup fails with ``startup exploded in <version>`` when ``STARTUP_FAILS`` is true.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

VERSION = "v1"  # <- rewritten by the reload tests
STARTUP_FAILS = False  # <- rewritten by the reload tests

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _die() -> None:
    raise SystemExit("sup_app: /crash stopped this worker's loop")


def worker_ident() -> str:
    return f"{multiprocessing.current_process().name}/{threading.current_thread().name}"


def _headers(extra: list[tuple[bytes, bytes]] | None = None) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-worker", worker_ident().encode()),
        (b"x-pid", str(os.getpid()).encode()),
        (b"x-version", VERSION.encode()),
        *(extra or []),
    ]


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": _headers([
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]),
    })
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if STARTUP_FAILS:
                await send({"type": "lifespan.startup.failed",
                            "message": f"startup exploded in {VERSION}"})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _sse(receive: Receive, send: Send) -> None:
    gone = asyncio.Event()

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                return

    watcher = asyncio.ensure_future(watch())
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": _headers([(b"content-type", b"text/event-stream"),
                             (b"cache-control", b"no-cache")]),
    })
    n = 0
    try:
        while not gone.is_set():
            await send({"type": "http.response.body", "body": f"data: tick {n}\n\n".encode(),
                        "more_body": True})
            n += 1
            try:
                await asyncio.wait_for(gone.wait(), 0.05)
            except TimeoutError:
                pass
    finally:
        watcher.cancel()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
    if path == "/":
        await _respond(send, 200, VERSION.encode())
    elif path == "/slow":
        marker = query.get("marker")
        if marker:
            Path(marker).write_text("started")
        await asyncio.sleep(float(query.get("s", "1")))
        await _respond(send, 200, f"slow {VERSION}".encode())
    elif path == "/sse":
        await _sse(receive, send)
    elif path == "/kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif path == "/crash":
        await _respond(send, 200, b"crashing")
        asyncio.get_running_loop().call_soon(_die)
    else:
        await _respond(send, 404, f"not found: {path}".encode())
