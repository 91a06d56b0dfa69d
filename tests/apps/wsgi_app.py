"""Plain WSGI app (no framework) for the SyncWorker tests: every PEP 3333 corner the server
must get right has a route. Files named by ``marker=``/``release=`` query values let tests wait
on real events (the app started, ``close()`` ran) instead of sleeping.

Routes:
- ``/``                      ``ok`` (+ ``x-worker`` = thread name)
- ``/environ``               JSON of the CGI/wsgi keys of the environ
- ``/echo``                  the request body read with ``read()`` (chunked bodies included)
- ``/lines``                 the body read with ``readline()``, as a JSON list
- ``/write``                 body sent through the ``write()`` callable
- ``/file``                  ``wsgi.file_wrapper`` over a 200 KiB file
- ``/replace``               ``start_response`` again with ``exc_info`` before any body → 500
- ``/reraise?marker=P``      ``exc_info`` after the body started: start_response re-raises
- ``/boom``                  raises before ``start_response`` → 500
- ``/twice``                 ``start_response`` twice without ``exc_info`` → 500
- ``/stream?count=N&marker=P``  N chunks over time; ``close()`` writes file P
- ``/slow?marker=P&release=R``  writes P, waits (≤ 15 s) for file R, answers ``slow done``
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

StartResponse = Callable[..., Callable[[bytes], None]]
BIG = Path(tempfile.gettempdir()) / "devserve-wsgi-test-file.bin"
if not BIG.exists() or BIG.stat().st_size != 200 * 1024:
    BIG.write_bytes(bytes(range(256)) * 800)


def _query(environ: dict[str, Any]) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}


class Tracked:
    """An iterable whose ``close()`` leaves a file behind."""

    def __init__(self, count: int, marker: str | None) -> None:
        self.count = count
        self.marker = marker

    def __iter__(self) -> Iterator[bytes]:
        for i in range(self.count):
            yield f"chunk {i}\n".encode()
            time.sleep(0.005)

    def close(self) -> None:
        if self.marker:
            Path(self.marker).write_text("closed")


def _text(start_response: StartResponse, body: bytes, status: str = "200 OK"
          ) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain"),
                            ("X-Worker", threading.current_thread().name)])
    return [body]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    q = _query(environ)
    if path == "/environ":
        keys = {k: v for k, v in environ.items() if isinstance(v, str | bool | int)
                or k == "wsgi.version"}
        keys["wsgi.version"] = list(environ["wsgi.version"])
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(keys).encode()]
    if path == "/echo":
        return _text(start_response, environ["wsgi.input"].read())
    if path == "/lines":
        lines = [line.decode() for line in iter(environ["wsgi.input"].readline, b"")]
        return _text(start_response, json.dumps(lines).encode())
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"then ")
        return [b"returned"]
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(BIG.stat().st_size))])
        return environ["wsgi.file_wrapper"](BIG.open("rb"), 32 * 1024)  # type: ignore[no-any-return]
    if path == "/replace":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("changed my mind")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                           sys.exc_info())
        return [b"replaced"]
    if path == "/reraise":
        return _reraise(start_response, q.get("marker"))
    if path == "/boom":
        raise RuntimeError("secret traceback detail")
    if path == "/twice":
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b"never"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked(int(q.get("count", "5")), q.get("marker"))
    if path == "/slow":
        if "marker" in q:
            Path(q["marker"]).write_text("started")
        deadline = time.monotonic() + 15
        while "release" in q and not Path(q["release"]).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return _text(start_response, b"slow done")
    return _text(start_response, b"ok")


def _reraise(start_response: StartResponse, marker: str | None) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first part\n"
    try:
        raise ValueError("failed mid-stream")
    except ValueError:
        try:
            start_response("500 Internal Server Error", [], sys.exc_info())
        except ValueError:
            if marker:
                Path(marker).write_text("reraised")
            raise
