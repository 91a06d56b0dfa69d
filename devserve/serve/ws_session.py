"""The ASGI side of one WebSocket, whatever carries it (HTTP/1.1 upgrade or HTTP/2 stream).

:class:`WSSession` owns what the app sees — ``websocket.connect`` / ``receive`` / ``disconnect``,
accept, close (403 before accept), ``websocket.http.response.*`` denials, the message size limit
(1009), keepalive pings checked by the worker's sweep, drain 1012 / shutdown 1001 — so both
transports behave the same. A transport subclass supplies the few hooks that touch bytes: how a
handshake answer, frames and the end of the connection are written, and how reading pauses.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import MutableMapping
from typing import Any

from devserve.asgi.cycle import ClientDisconnected
from devserve.protocols.websocket import (
    WebSocketConnection,
    WSClosed,
    WSFailed,
    WSMessage,
    WSPong,
    WSRequest,
)
from devserve.serve.state import Connection, WorkerState

logger = logging.getLogger("devserve.error")

Headers = list[tuple[bytes, bytes]]
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
READ_QUEUE_HIGH = 32  # messages the app has not read yet before we stop reading the peer
CLOSE_WAIT = 1.0  # seconds to wait for the peer's close reply before ending the transport


class WSSession(Connection):
    """ASGI ``websocket`` scope driven by a :class:`WebSocketConnection`; transport-agnostic."""

    def __init__(self, state: WorkerState, loop: asyncio.AbstractEventLoop,
                 scope: dict[str, Any], ws: WebSocketConnection) -> None:
        self.state = state
        self.loop = loop
        self.scope = scope
        self.ws = ws
        self.queue: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self.handshake_done = False  # accepted or rejected
        self.accepted = False
        self.closed = False  # close frame sent or received: no more messages either way
        self.disconnect_sent = False
        self.offers_deflate = False
        self.rejecting = False
        self.task: asyncio.Task[None] | None = None
        self._read_paused = False
        self._ping_due: float | None = None
        self._pong_deadline: float | None = None
        self._close_deadline: float | None = None

    # -- transport hooks -------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        """Write WebSocket frame bytes (or, over HTTP/1.1, raw handshake bytes)."""
        raise NotImplementedError

    def _send_accept(self, subprotocol: str | None, headers: Headers) -> None:
        raise NotImplementedError

    def _send_reject_head(self, status: int, headers: Headers) -> None:
        raise NotImplementedError

    def _send_reject_body(self, data: bytes, finished: bool) -> None:
        raise NotImplementedError

    def _close_transport(self) -> None:
        """End the connection cleanly (TCP close, or END_STREAM over HTTP/2)."""
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError

    def _pause_reading(self) -> None:
        raise NotImplementedError

    def _resume_reading(self) -> None:
        raise NotImplementedError

    def _gone(self) -> bool:
        """The transport is closed or closing: no more frames can be written."""
        raise NotImplementedError

    async def _wait_writable(self) -> None:
        """Return once written frames are flushed enough to take more (backpressure)."""
        raise NotImplementedError

    # -- events ----------------------------------------------------------------------------
    def start_app(self, subprotocols: list[str], offers_deflate: bool) -> None:
        """The handshake request is complete: run the app with ``websocket.connect``."""
        self.scope["subprotocols"] = subprotocols
        self.offers_deflate = offers_deflate
        self.queue.put_nowait({"type": "websocket.connect"})
        self.task = self.loop.create_task(self._run())
        self.state.tasks.add(self.task)
        self.task.add_done_callback(self.state.tasks.discard)

    def process(self) -> None:
        """Turn what the peer sent (already fed to ``self.ws``) into ASGI messages."""
        for event in self.ws.next_events():
            if isinstance(event, WSRequest):
                self.start_app(event.subprotocols, event.offers_deflate)
            elif isinstance(event, WSMessage):
                key = "text" if isinstance(event.data, str) else "bytes"
                self.queue.put_nowait({"type": "websocket.receive", key: event.data})
                if self.queue.qsize() > READ_QUEUE_HIGH and not self._read_paused:
                    self._read_paused = True
                    self._pause_reading()
            elif isinstance(event, WSPong):
                self._pong_deadline = None
            elif isinstance(event, WSClosed):
                self._write(self.ws.data_to_send())
                self.closed = True
                self.disconnect(event.code, event.reason)
                self._close_transport()
                return
            elif isinstance(event, WSFailed):
                self._write(self.ws.data_to_send())
                self._write(self.ws.close(event.code, event.reason))
                self.disconnect(event.code, event.reason)
                self._close_transport()
                return
        self._write(self.ws.data_to_send())

    def disconnect(self, code: int, reason: str) -> None:
        """Queue the one ``websocket.disconnect`` the app gets."""
        if not self.disconnect_sent:
            self.disconnect_sent = True
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code,
                                   "reason": reason})

    # -- ASGI ------------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            result = await self.state.app(  # type: ignore[func-returns-value]
                self.scope, self.receive, self.send
            )
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                self._abort()
                raise
            if isinstance(exc, ClientDisconnected):
                return
            logger.error("Exception in ASGI application (websocket)", exc_info=exc)
            if not self.handshake_done:
                self._reject_plain(500)
            elif self.accepted and not self.closed:
                self._send_close(1011, "")
            elif self.rejecting:
                self._abort()  # a half-sent denial cannot be completed
            return
        if result is not None:
            logger.error("ASGI callable returned a value (%r); expected None", result)
        if not self.handshake_done:
            logger.error("ASGI callable returned without accepting or closing the websocket")
            self._reject_plain(500)
        elif self.accepted and not self.closed:
            self._send_close(1000, "")
        elif self.rejecting:
            self._close_transport()

    async def receive(self) -> MutableMapping[str, Any]:
        message = await self.queue.get()
        if self._read_paused and self.queue.qsize() <= READ_QUEUE_HIGH // 2:
            self._read_paused = False
            if not self.closed:
                self._resume_reading()
        return message

    async def send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if not self.handshake_done:
            if kind == "websocket.accept":
                headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
                check_headers(headers)
                self._send_accept(message.get("subprotocol"), headers)
                self.handshake_done = self.accepted = True
                interval = self.state.config.ws_ping_interval
                if interval:
                    self._ping_due = self.loop.time() + interval
                if self.state.draining or self.state.shutting_down:
                    self.start_draining()  # accepted by a generation that is going away
            elif kind == "websocket.close":
                self._reject_plain(403)
            elif kind == "websocket.http.response.start":
                headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
                check_headers(headers)
                self._send_reject_head(int(message["status"]), headers)
                self.handshake_done = True
                self.rejecting = True
            else:
                raise RuntimeError(f"ASGI: {kind!r} sent before the websocket was accepted")
            return
        if self.rejecting:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"ASGI: unexpected {kind!r} during a websocket denial")
            more = bool(message.get("more_body", False))
            self._send_reject_body(message.get("body", b""), not more)
            if not more:
                self.rejecting = False
                self._close_transport()
            return
        if self.closed or self._gone():
            raise ClientDisconnected("websocket is closed")
        if kind == "websocket.send":
            data = message.get("bytes")
            if data is None:
                data = message.get("text")
            if data is None:
                raise RuntimeError("ASGI: websocket.send needs 'text' or 'bytes'")
            self._write(self.ws.message(data))
            await self._wait_writable()
        elif kind == "websocket.close":
            self._send_close(int(message.get("code", 1000)), message.get("reason") or "")
        else:
            raise RuntimeError(f"ASGI: unexpected message type {kind!r} on a websocket")

    # -- helpers ---------------------------------------------------------------------------
    def _reject_plain(self, status: int) -> None:
        self.handshake_done = True
        body = b"Forbidden\n" if status == 403 else b"Internal Server Error\n"
        self._send_reject_head(status, [(b"content-type", b"text/plain; charset=utf-8"),
                                        (b"content-length", str(len(body)).encode())])
        self._send_reject_body(body, True)
        self.disconnect(1006, "")
        self._close_transport()

    def _send_close(self, code: int, reason: str) -> None:
        self._write(self.ws.close(code, reason))
        self.closed = True
        # Wait briefly for the peer's close reply, then end the transport.
        self._close_deadline = self.loop.time() + CLOSE_WAIT

    # -- Connection (drain / stop / sweep) -------------------------------------------------
    def start_draining(self) -> None:
        """Close 1012 (reload) or 1001 (shutdown): the client reconnects to the new code."""
        code = 1001 if self.state.shutting_down else 1012
        if self.accepted and not self.closed:
            self._send_close(code, "server restart" if code == 1012 else "server shutdown")
            self.disconnect(code, "")
        # A handshake still in flight finishes; the app's accept is then closed at once.

    def force_close(self) -> None:
        self.disconnect(1006, "")
        self._abort()

    def check_timeouts(self, now: float) -> None:
        if self._close_deadline is not None and now >= self._close_deadline:
            self._close_deadline = None
            self._close_transport()
            return
        if not self.accepted or self.closed:
            return
        if self._pong_deadline is not None and now >= self._pong_deadline:
            self._send_close(1011, "keepalive ping timeout")
            self.disconnect(1011, "")
            return
        if self._ping_due is not None and now >= self._ping_due:
            config = self.state.config
            self._write(self.ws.ping(b"devserve"))
            self._ping_due = now + (config.ws_ping_interval or 0.0)
            if self._pong_deadline is None and config.ws_ping_timeout:
                self._pong_deadline = now + config.ws_ping_timeout


def check_headers(headers: Headers) -> None:
    """Header names/values from the app are validated like HTTP responses."""
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise ValueError(f"invalid response header {name!r}: {value!r}")
