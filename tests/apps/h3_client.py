"""A small HTTP/3 test client: aioquic's ``connect`` + ``H3Connection``, many requests (and
concurrent streams) over one QUIC connection, so tests can tell whether the connection survived."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset


@dataclass
class H3Response:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    reset: int | None = None

    @property
    def text(self) -> str:
        return self.body.decode()


class _RecordingH3(H3Connection):
    """Notices the server's GOAWAY (aioquic's client skips its payload)."""

    goaway_seen = False

    def _check_control_frame_type(self, frame_type: int) -> None:
        if frame_type == FrameType.GOAWAY:
            self.goaway_seen = True
        super()._check_control_frame_type(frame_type)


class H3ClientProtocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = _RecordingH3(self._quic)
        self.waiters: dict[int, asyncio.Future[H3Response]] = {}
        self.responses: dict[int, H3Response] = {}
        self.terminated: asyncio.Future[ConnectionTerminated] = self._loop.create_future()
        self.goaway = False

    def reset(self, sid: int) -> None:
        """Abort a request stream from the client side (RESET_STREAM + STOP_SENDING)."""
        self._quic.reset_stream(sid, 0x10C)  # H3_REQUEST_CANCELLED
        self._quic.stop_stream(sid, 0x10C)
        self.transmit()

    def start(self, method: str, path: str) -> tuple[int, asyncio.Future[H3Response]]:
        """Send a bodiless request; return its stream id and the future of its response."""
        sid = self._quic.get_next_available_stream_id()
        self.h3.send_headers(sid, [(b":method", method.encode()), (b":scheme", b"https"),
                                   (b":authority", b"localhost"), (b":path", path.encode())],
                             end_stream=True)
        waiter = self.waiters[sid] = self._loop.create_future()
        self.responses[sid] = H3Response()
        self.transmit()
        return sid, waiter

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: list[tuple[bytes, bytes]] | None = None,
                      authority: str = "localhost") -> H3Response:
        sid = self._quic.get_next_available_stream_id()
        self.h3.send_headers(sid, [
            (b":method", method.encode()), (b":scheme", b"https"),
            (b":authority", authority.encode()), (b":path", path.encode()),
            *(headers or []),
        ], end_stream=not body)
        if body:
            self.h3.send_data(sid, body, end_stream=True)
        waiter = self.waiters[sid] = self._loop.create_future()
        self.responses[sid] = H3Response()
        self.transmit()
        return await waiter

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            if not self.terminated.done():
                self.terminated.set_result(event)
            for waiter in self.waiters.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError(f"connection closed: {event}"))
        if isinstance(event, StreamReset) and event.stream_id in self.waiters:
            response = self.responses[event.stream_id]
            response.reset = event.error_code
            self._finish(event.stream_id)
        for h3_event in self.h3.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        sid = getattr(event, "stream_id", None)
        if sid not in self.responses:
            return
        response = self.responses[sid]
        if isinstance(event, HeadersReceived):
            for name, value in event.headers:
                if name == b":status":
                    response.status = int(value)
                else:
                    response.headers[name] = value
        elif isinstance(event, DataReceived):
            response.body += event.data
        if getattr(event, "stream_ended", False):
            self._finish(sid)

    def _finish(self, sid: int) -> None:
        waiter = self.waiters.pop(sid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(self.responses.pop(sid))


def client_configuration() -> QuicConfiguration:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN,
                                      verify_mode=ssl.CERT_NONE, server_name="localhost")
    return configuration


@asynccontextmanager
async def h3_connect(host: str, port: int, timeout: float = 10.0
                     ) -> AsyncIterator[H3ClientProtocol]:
    """One QUIC connection (handshake bounded by *timeout*) speaking HTTP/3."""
    manager = connect(host, port, configuration=client_configuration(),
                      create_protocol=H3ClientProtocol)
    client = await asyncio.wait_for(manager.__aenter__(), timeout)
    assert isinstance(client, H3ClientProtocol)
    try:
        yield client
    finally:
        await manager.__aexit__(None, None, None)


def get(host: str, port: int, path: str = "/", body: bytes = b"", method: str = "GET",
        timeout: float = 10.0) -> H3Response:
    """One request on a fresh connection (synchronous, for simple tests)."""
    async def run() -> H3Response:
        async with h3_connect(host, port, timeout) as client:
            return await asyncio.wait_for(client.request(method, path, body), timeout)
    return asyncio.run(run())
