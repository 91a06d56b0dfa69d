"""asyncio glue for WebSocket over HTTP/1.1 and the ASGI ``websocket`` scope.

An HTTP/1.1 connection that asks to upgrade is handed here with the transport
(``switch.take_over``, the request head re-sent as the first bytes); wsproto parses the
handshake. Everything the app sees is :class:`~devserve.serve.ws_session.WSSession`'s
(shared with WebSocket over HTTP/2): this module only maps its hooks onto the TCP transport.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote

from devserve.asgi.scope import ASGI_VERSION, apply_proxy_headers, split_target
from devserve.protocols.websocket import WebSocketConnection
from devserve.serve.flow import WriteFlow
from devserve.serve.state import WorkerState
from devserve.serve.ws_session import Headers, WSSession


def is_websocket_upgrade(headers: Headers) -> bool:
    upgrade = connection = False
    for name, value in headers:
        if name == b"upgrade" and value.lower() == b"websocket":
            upgrade = True
        elif name == b"connection" and b"upgrade" in value.lower():
            connection = True
    return upgrade and connection


class WSProtocol(asyncio.Protocol, WSSession):
    """One WebSocket connection over HTTP/1.1, from handshake to close."""

    def __init__(self, state: WorkerState, loop: asyncio.AbstractEventLoop,
                 scope: dict[str, Any]) -> None:
        config = state.config
        ws = WebSocketConnection(max_size=config.ws_max_size,
                                 allow_deflate=config.ws_per_message_deflate)
        WSSession.__init__(self, state, loop, scope, ws)
        self.transport: asyncio.Transport | None = None
        self._writes = WriteFlow()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections.add(self)  # the handshake bytes follow (switch.take_over)

    def data_received(self, data: bytes) -> None:
        self.ws.feed(data)
        self.process()

    def eof_received(self) -> bool | None:
        self.ws.feed(None)
        self.process()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self.disconnect(1006 if not self.closed else 1000, "")
        self.closed = True
        self._writes.release()

    def pause_writing(self) -> None:
        self._writes.pause()

    def resume_writing(self) -> None:
        self._writes.resume()

    # -- WSSession hooks -------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _send_accept(self, subprotocol: str | None, headers: Headers) -> None:
        self._write(self.ws.accept(subprotocol, headers, self.offers_deflate))

    def _send_reject_head(self, status: int, headers: Headers) -> None:
        self._write(self.ws.reject(status, headers, True))

    def _send_reject_body(self, data: bytes, finished: bool) -> None:
        self._write(self.ws.reject_body(data, finished))

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def _gone(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    async def _wait_writable(self) -> None:
        await self._writes.wait()


def websocket_scope(*, head_target: bytes, headers: Headers, scheme: str,
                    server: tuple[str, int] | None, client: tuple[str, int] | None,
                    root_path: str, state: dict[str, Any] | None,
                    trusted: Any, http_version: str = "1.1") -> dict[str, Any]:
    """The ASGI ``websocket`` scope for an upgrade request (or an HTTP/2 extended CONNECT)."""
    raw_path, query = split_target(head_target)
    decoded = raw_path.decode("ascii", "replace")
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": ASGI_VERSION,
        "http_version": http_version,
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
