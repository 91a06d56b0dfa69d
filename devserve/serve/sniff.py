"""Pick the protocol of a new connection: HTTP/2 or HTTP/1.1, on one port.

TLS: ALPN already decided during the handshake (``h2`` → HTTP/2). Cleartext: the client's
first bytes decide; the HTTP/2 connection preface (prior knowledge, RFC 9113 §3.3) can never
start an HTTP/1.1 request, so one mismatching byte is enough to hand over to HTTP/1.1. Until
then this protocol is a tracked :class:`Connection`, so drain, force-close and the idle timeout
apply to a client that connected but has not spoken yet.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from devserve.protocols.http2 import PREFACE
from devserve.serve.h1 import DRAIN_IDLE_CLOSE, H1Protocol
from devserve.serve.h2 import H2Protocol
from devserve.serve.state import (
    LINGER,
    Connection,
    WorkerState,
    cut,
    detach_transport_socket,
    shut_write,
)
from devserve.serve.switch import take_over

ProtocolFactory = Callable[[], asyncio.Protocol]


def protocol_factory(state: WorkerState, loop: asyncio.AbstractEventLoop, scheme: str
                     ) -> ProtocolFactory:
    """What ``loop.create_server`` builds per connection for this worker's config."""
    if not state.config.http2:
        return lambda: H1Protocol(state, loop, scheme)
    return lambda: SniffProtocol(state, loop, scheme)


class SniffProtocol(asyncio.Protocol, Connection):
    """Chooses H2Protocol or H1Protocol, then steps aside (``transport.set_protocol``)."""

    def __init__(self, state: WorkerState, loop: asyncio.AbstractEventLoop, scheme: str) -> None:
        self.state = state
        self.loop = loop
        self.scheme = scheme
        self.transport: asyncio.Transport | None = None
        self.closing = False
        self._buffer = b""
        self._deadline: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            h2 = ssl_object.selected_alpn_protocol() == "h2"
            self._switch(H2Protocol(self.state, self.loop, "https") if h2
                         else H1Protocol(self.state, self.loop, "https"))
            return
        self.state.connections.add(self)
        self._deadline = self.loop.time() + self.state.config.timeout_keep_alive
        if self.state.draining:
            self.start_draining()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # closing gracefully: discard until the client's EOF
        buffer = self._buffer + data if self._buffer else data
        size = min(len(buffer), len(PREFACE))
        if buffer[:size] != PREFACE[:size]:
            self._switch(H1Protocol(self.state, self.loop, self.scheme), buffer)
        elif size == len(PREFACE):
            self._switch(H2Protocol(self.state, self.loop, self.scheme), buffer)
        else:
            self._buffer = buffer  # a prefix of the preface: wait for the rest

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.state.connections.discard(self)

    def _switch(self, protocol: H1Protocol | H2Protocol, first: bytes = b"") -> None:
        assert self.transport is not None
        take_over(self.transport, self, protocol, buffered=first)

    def release_transport(self) -> None:
        """``switch.Releasing``: the chosen protocol takes over (this one never pauses)."""
        self.closing = True
        self.state.connections.discard(self)
        self._deadline = None

    # -- Connection ------------------------------------------------------------------------
    def start_draining(self) -> None:
        """Like an idle HTTP/1.1 connection: a short grace to send its first request (none
        once it sent the first bytes of one)."""
        if self._buffer:
            return
        soon = self.loop.time() + min(DRAIN_IDLE_CLOSE, self.state.config.timeout_keep_alive)
        if self._deadline is None or soon < self._deadline:
            self._deadline = soon

    def force_close(self) -> None:
        if self.transport is None or (self.closing and self._deadline is None):
            return  # handed over to another protocol (or already closed)
        self.closing = True
        self._deadline = None
        self.transport.abort()

    def check_timeouts(self, now: float) -> None:
        """Close a silent connection gracefully at its deadline; cut it :data:`LINGER` later
        if the client never closes its side."""
        if self._deadline is None or now < self._deadline or self.transport is None:
            return
        if self.closing:
            self._deadline = None
            cut(self.transport)
        else:
            self.closing = True
            self._deadline = now + LINGER if shut_write(self.transport) else None

    def detach_if_idle(self) -> socket.socket | None:
        """Nothing read yet: the next generation can take the socket as is (thread mode)."""
        if self.closing or self._buffer or self.transport is None:
            return None
        sock = detach_transport_socket(self.transport)
        if sock is not None:
            self.closing = True
            self.state.connections.discard(self)
        return sock
