"""One ASGI HTTP request/response cycle: ``receive``/``send``, backpressure and disconnect.

The cycle is protocol-agnostic: it talks to its connection through :class:`CycleOwner`, which
HTTP/1.1 implements now and HTTP/2 streams implement later. Rules:
- Request body bytes are queued by the owner (``feed_body``); when the queue passes
  ``HIGH_WATER`` the owner is asked to stop reading, and to resume once the app drains it, so a
  slow app makes the client wait instead of the server buffering an unbounded body.
- The response head is held until the first body message so a single-message response gets a
  ``content-length`` (no chunking) and head + body go out in one write.
- An app exception before the response started becomes a plain 500 (no traceback in the body);
  after it started the connection is aborted. Either way the server keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from devserve.asgi.types import ASGIApp, Message

Headers = list[tuple[bytes, bytes]]

HIGH_WATER = 64 * 1024
logger = logging.getLogger("devserve.error")

_DISCONNECT: Message = {"type": "http.disconnect"}


class ClientDisconnected(OSError):
    """``send()`` after the client went away (ASGI 2.4 asks for an IOError subclass), so
    streaming apps stop producing instead of running on for nobody."""


class CycleOwner(Protocol):
    """What a cycle needs from its connection (HTTP/1.1 connection or HTTP/2 stream)."""

    def write_response(self, status: int, headers: Headers, body: bytes, end: bool) -> None:
        """Send the head (and maybe first body bytes, and maybe the end) of the response."""

    def write_body(self, data: bytes, end: bool) -> None: ...

    async def wait_writable(self) -> None:
        """Return when the transport can take more output (write-side backpressure)."""

    def want_body(self) -> None:
        """The app drained the body queue: resume reading / grant flow-control credit."""

    def send_continue(self) -> None:
        """Send ``100 Continue`` if the client asked for it and nothing was sent yet."""

    def abort(self) -> None:
        """Close the connection abruptly (the response cannot be completed)."""

    def cycle_done(self, cycle: HTTPCycle) -> None:
        """The response is complete (or abandoned); the owner may start the next request."""


class HTTPCycle:
    """State of one request; ``run(app)`` is the task body."""

    __slots__ = (
        "_body",
        "_body_size",
        "_event",
        "_final_delivered",
        "_reading_paused",
        "disconnected",
        "extra_headers",
        "force_close",
        "is_head",
        "more_body",
        "on_pause_reading",
        "owner",
        "pending_head",
        "response_complete",
        "response_started",
        "scope",
        "start_time",
        "status",
    )

    def __init__(
        self,
        scope: dict[str, Any],
        owner: CycleOwner,
        *,
        extra_headers: Headers,
        force_close: bool = False,
        on_pause_reading: Callable[[], None] | None = None,
    ) -> None:
        self.scope = scope
        self.owner = owner
        self.extra_headers = extra_headers
        self.force_close = force_close
        self.is_head = scope["method"] == "HEAD"
        self.on_pause_reading = on_pause_reading
        self._body: list[bytes] = []
        self._body_size = 0
        self._event: asyncio.Event | None = None  # created only if receive() has to wait
        self._reading_paused = False
        self._final_delivered = False
        self.more_body = True
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.pending_head: tuple[int, Headers] | None = None
        self.status = 0
        self.start_time = time.perf_counter()

    # -- fed by the connection -------------------------------------------------------------
    def feed_body(self, data: bytes) -> None:
        self._body.append(data)
        self._body_size += len(data)
        self._wake()
        if self._body_size > HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            if self.on_pause_reading is not None:
                self.on_pause_reading()

    def end_body(self) -> None:
        self.more_body = False
        self._wake()

    def mark_disconnected(self) -> None:
        self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        if self._event is not None:
            self._event.set()

    async def _wait(self) -> None:
        event = self._event
        if event is None:
            event = self._event = asyncio.Event()
        event.clear()
        await event.wait()

    # -- ASGI callables --------------------------------------------------------------------
    async def receive(self) -> Message:
        if self.disconnected or self.response_complete:
            return _DISCONNECT
        if self._final_delivered:
            # The whole body was delivered: block until the client goes or we answered.
            while not (self.disconnected or self.response_complete):
                await self._wait()
            return _DISCONNECT
        if not self._body and self.more_body:
            self.owner.send_continue()
            self._reading_paused = False
            self.owner.want_body()
            while not self._body and self.more_body:
                if self.disconnected or self.response_complete:
                    return _DISCONNECT
                await self._wait()
        if self.disconnected:
            return _DISCONNECT
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body.clear()
        self._body_size = 0
        if self._reading_paused:
            self._reading_paused = False
            self.owner.want_body()
        more = self.more_body
        if not more:
            self._final_delivered = True
        return {"type": "http.request", "body": body, "more_body": more}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if not self.response_started:
                raise RuntimeError("ASGI: 'http.response.body' sent before 'http.response.start'")
            if self.response_complete:
                raise RuntimeError("ASGI: response already completed")
            body: bytes = message.get("body", b"")
            more: bool = message.get("more_body", False)
            if self.disconnected:
                raise ClientDisconnected("the client closed the connection")
            if self.pending_head is not None:
                status, headers = self.pending_head
                self.pending_head = None
                if not more and not _has_framing(headers):
                    # HEAD gets the length the GET body would have had.
                    headers.append((b"content-length", str(len(body)).encode()))
                if self.is_head:
                    body = b""
                self.owner.write_response(status, headers, body, not more)
            else:
                if self.is_head:
                    body = b""
                self.owner.write_body(body, not more)
            if not more:
                self._complete()
            else:
                await self.owner.wait_writable()
        elif kind == "http.response.start":
            if self.response_started:
                raise RuntimeError("ASGI: 'http.response.start' sent twice")
            self.response_started = True
            status = int(message["status"])
            self.status = status
            headers = self._response_headers(message.get("headers", ()))
            self.pending_head = (status, headers)
        elif kind == "http.response.trailers":
            return
        else:
            raise RuntimeError(f"ASGI: unexpected message type {kind!r} in an HTTP cycle")

    def _response_headers(self, app_headers: Any) -> Headers:
        headers: Headers = []
        names: set[bytes] = set()
        for name, value in app_headers:
            lname = bytes(name).lower()
            names.add(lname)
            headers.append((lname, bytes(value)))
        for name, value in self.extra_headers:
            if name not in names:
                headers.append((name, value))
        if self.force_close and b"connection" not in names:
            headers.append((b"connection", b"close"))
        return headers

    def _complete(self) -> None:
        if not self.response_complete:
            self.response_complete = True
            self._wake()
            self.owner.cycle_done(self)

    # -- running the app -------------------------------------------------------------------
    async def run(self, app: ASGIApp) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)  # type: ignore[func-returns-value]
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                self._abandon()
                raise
            if self.disconnected:
                self._abandon()  # the client left; whatever the app raised is moot
                return
            if self.pending_head is not None or not self.response_started:
                logger.error("Exception in ASGI application", exc_info=exc)
                self._send_500()
            else:
                logger.error("Exception in ASGI application after the response started",
                             exc_info=exc)
                self._abandon()
            return
        if result is not None:
            logger.error("ASGI callable returned a value (%r); expected None", result)
        if not self.response_started and not self.disconnected:
            logger.error("ASGI callable returned without starting a response")
            self._send_500()
        elif not self.response_complete and not self.disconnected:
            if self.pending_head is not None:
                # Started but never sent a body message: finish it empty rather than hang.
                status, headers = self.pending_head
                self.pending_head = None
                if not _has_framing(headers):
                    headers.append((b"content-length", b"0"))
                self.owner.write_response(status, headers, b"", True)
                self._complete()
            else:
                logger.error("ASGI callable returned without completing the response")
                self._abandon()
        elif not self.response_complete:
            self._complete()

    def _send_500(self) -> None:
        if self.disconnected:
            self._complete()
            return
        self.status = 500
        self.response_started = True
        self.pending_head = None
        body = b"Internal Server Error\n"
        headers: Headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        headers.extend(h for h in self.extra_headers)
        if self.force_close:
            headers.append((b"connection", b"close"))
        self.owner.write_response(500, headers, b"" if self.is_head else body, True)
        self._complete()

    def _abandon(self) -> None:
        if not self.response_complete:
            self.response_complete = True
            self._wake()
            self.owner.abort()
            self.owner.cycle_done(self)


def _has_framing(headers: Headers) -> bool:
    return any(name in (b"content-length", b"transfer-encoding") for name, _ in headers)
