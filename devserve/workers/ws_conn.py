"""asyncio glue for WebSocket connections and the ASGI ``websocket`` scope.

An HTTP/1.1 connection that asks to upgrade is handed here with the transport. The app sees
``websocket.connect`` and answers with ``websocket.accept`` / ``websocket.close`` (403) /
``websocket.http.response.*`` (a real HTTP denial). Draining generations close open sockets with
1012 (service restart; 1001 on shutdown) so browsers reconnect to the new code at once; pings
and their timeout are checked by the worker's periodic sweep, not per-connection timers.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import MutableMapping
from typing import Any

from devserve.asgi.cycle import ClientDisconnected
from devserve.asgi.scope import ASGI_VERSION, apply_proxy_headers, split_target
from devserve.protocols.websocket import (
    WebSocketConnection,
    WSClosed,
    WSFailed,
    WSMessage,
    WSPong,
    WSRequest,
)
from devserve.workers.state import Connection, WorkerState

logger = logging.getLogger("devserve.error")

Headers = list[tuple[bytes, bytes]]
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
READ_QUEUE_HIGH = 32  # messages the app has not read yet before we stop reading the socket


def is_websocket_upgrade(headers: Headers) -> bool:
    upgrade = connection = False
    for name, value in headers:
        if name == b"upgrade" and value.lower() == b"websocket":
            upgrade = True
        elif name == b"connection" and b"upgrade" in value.lower():
            connection = True
    return upgrade and connection


class WSProtocol(asyncio.Protocol, Connection):
    """One WebSocket connection, from handshake to close."""

    def __init__(self, state: WorkerState, loop: asyncio.AbstractEventLoop,
                 scope: dict[str, Any], first_bytes: bytes) -> None:
        config = state.config
        self.state = state
        self.loop = loop
        self.scope = scope
        self.ws = WebSocketConnection(max_size=config.ws_max_size,
                                      allow_deflate=config.ws_per_message_deflate)
        self.first_bytes = first_bytes
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self.handshake_done = False  # accepted or rejected
        self.accepted = False
        self.closed = False  # close frame sent or received: no more messages either way
        self.disconnect_sent = False
        self.offers_deflate = False
        self.rejecting = False
        self.task: asyncio.Task[None] | None = None
        self._read_paused = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._ping_due: float | None = None
        self._pong_deadline: float | None = None
        self._close_deadline: float | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections.add(self)
        self.data_received(self.first_bytes)

    def data_received(self, data: bytes) -> None:
        self.ws.feed(data)
        self._process()

    def eof_received(self) -> bool | None:
        self.ws.feed(None)
        self._process()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self._disconnect(1006 if not self.closed else 1000, "")
        self.closed = True
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # -- events ----------------------------------------------------------------------------
    def _process(self) -> None:
        for event in self.ws.next_events():
            if isinstance(event, WSRequest):
                self.scope["subprotocols"] = event.subprotocols
                self.offers_deflate = event.offers_deflate
                self.queue.put_nowait({"type": "websocket.connect"})
                self.task = self.loop.create_task(self._run())
                self.state.tasks.add(self.task)
                self.task.add_done_callback(self.state.tasks.discard)
            elif isinstance(event, WSMessage):
                key = "text" if isinstance(event.data, str) else "bytes"
                self.queue.put_nowait({"type": "websocket.receive", key: event.data})
                if self.queue.qsize() > READ_QUEUE_HIGH and not self._read_paused:
                    self._read_paused = True
                    if self.transport is not None:
                        self.transport.pause_reading()
            elif isinstance(event, WSPong):
                self._pong_deadline = None
            elif isinstance(event, WSClosed):
                self._write(self.ws.data_to_send())
                self.closed = True
                self._disconnect(event.code, event.reason)
                self._close_transport()
                return
            elif isinstance(event, WSFailed):
                self._write(self.ws.data_to_send())
                self._write(self.ws.close(event.code, event.reason))
                self._disconnect(event.code, event.reason)
                self._close_transport()
                return
        self._write(self.ws.data_to_send())

    def _disconnect(self, code: int, reason: str) -> None:
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
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()
        return message

    async def send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if not self.handshake_done:
            if kind == "websocket.accept":
                headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
                _check_headers(headers)
                self._write(self.ws.accept(message.get("subprotocol"), headers,
                                           self.offers_deflate))
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
                _check_headers(headers)
                self._write(self.ws.reject(int(message["status"]), headers, True))
                self.handshake_done = True
                self.rejecting = True
            else:
                raise RuntimeError(f"ASGI: {kind!r} sent before the websocket was accepted")
            return
        if self.rejecting:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"ASGI: unexpected {kind!r} during a websocket denial")
            more = bool(message.get("more_body", False))
            self._write(self.ws.reject_body(message.get("body", b""), not more))
            if not more:
                self.rejecting = False
                self._close_transport()
            return
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ClientDisconnected("websocket is closed")
        if kind == "websocket.send":
            data = message.get("bytes")
            if data is None:
                data = message.get("text")
            if data is None:
                raise RuntimeError("ASGI: websocket.send needs 'text' or 'bytes'")
            self._write(self.ws.message(data))
            if self._write_paused:
                waiter: asyncio.Future[None] = self.loop.create_future()
                self._drain_waiters.append(waiter)
                await waiter
        elif kind == "websocket.close":
            self._send_close(int(message.get("code", 1000)), message.get("reason") or "")
        else:
            raise RuntimeError(f"ASGI: unexpected message type {kind!r} on a websocket")

    # -- helpers ---------------------------------------------------------------------------
    def _reject_plain(self, status: int) -> None:
        self.handshake_done = True
        body = b"Forbidden\n" if status == 403 else b"Internal Server Error\n"
        self._write(self.ws.reject(status, [(b"content-type", b"text/plain; charset=utf-8"),
                                            (b"content-length", str(len(body)).encode())],
                                   True))
        self._write(self.ws.reject_body(body, True))
        self._disconnect(1006, "")
        self._close_transport()

    def _send_close(self, code: int, reason: str) -> None:
        self._write(self.ws.close(code, reason))
        self.closed = True
        # Wait briefly for the client's close reply, then close the TCP connection.
        self._close_deadline = self.loop.time() + 1.0

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- Connection (drain / stop / sweep) -------------------------------------------------
    def is_idle(self) -> bool:
        return False

    def start_draining(self) -> None:
        """Close 1012 (reload) or 1001 (shutdown): the client reconnects to the new code."""
        code = 1001 if self.state.shutting_down else 1012
        if self.accepted and not self.closed:
            self._send_close(code, "server restart" if code == 1012 else "server shutdown")
            self._disconnect(code, "")
        # A handshake still in flight finishes; the app's accept is then closed at once.

    def force_close(self) -> None:
        self._disconnect(1006, "")
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
            self._disconnect(1011, "")
            return
        if self._ping_due is not None and now >= self._ping_due:
            config = self.state.config
            self._write(self.ws.ping(b"devserve"))
            self._ping_due = now + (config.ws_ping_interval or 0.0)
            if self._pong_deadline is None and config.ws_ping_timeout:
                self._pong_deadline = now + config.ws_ping_timeout


def _check_headers(headers: Headers) -> None:
    """Header names/values from the app are validated like HTTP responses."""
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise ValueError(f"invalid response header {name!r}: {value!r}")


def websocket_scope(*, head_target: bytes, headers: Headers, scheme: str,
                    server: tuple[str, int] | None, client: tuple[str, int] | None,
                    root_path: str, state: dict[str, Any] | None,
                    trusted: Any) -> dict[str, Any]:
    """The ASGI ``websocket`` scope for an upgrade request."""
    from urllib.parse import unquote

    raw_path, query = split_target(head_target)
    decoded = raw_path.decode("ascii", "replace")
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": ASGI_VERSION,
        "http_version": "1.1",
        "scheme": scheme,
        "server": server,
        "client": client,
        "root_path": root_path,
        "path": root_path + (unquote(decoded) if "%" in decoded else decoded),
        "raw_path": root_path.encode("ascii") + raw_path if root_path else raw_path,
        "query_string": query,
        "headers": headers,
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}},
    }
    if state is not None:
        scope["state"] = dict(state)
    if trusted is not None:
        apply_proxy_headers(scope, trusted)
    return scope
