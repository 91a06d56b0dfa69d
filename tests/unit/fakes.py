"""In-memory stand-ins that are real implementations of the interface they replace.

``MemoryTransport`` is an ``asyncio.Transport`` without a socket, so a connection driver (an
``asyncio.Protocol`` from ``devserve.serve``) runs on a real event loop with real bytes: the
test plays the client with ``feed``/``feed_eof``, reads what the server wrote with ``take``, and
sees ``close``/``abort``/``pause_reading`` as the driver called them. Like a socket transport it
delivers ``connection_lost`` on the next loop iteration after a close, and holds back data fed
while reading is paused until reading resumes.
"""

from __future__ import annotations

import asyncio
from typing import Any

PEER = ("127.0.0.1", 50000)
LOCAL = ("127.0.0.1", 8000)


class MemoryTransport(asyncio.Transport):
    """One connection's transport; ``get_extra_info`` knows peername and sockname, and has no
    socket (so nothing can be detached) and no TLS."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, *,
                 peername: tuple[str, int] = PEER, sockname: tuple[str, int] = LOCAL) -> None:
        super().__init__({"peername": peername, "sockname": sockname, "socket": None})
        self.loop = loop or asyncio.get_running_loop()
        self._protocol: asyncio.BaseProtocol | None = None
        self.written = bytearray()
        self.closed = False  # close() or abort() was called
        self.aborted = False
        self.lost = False  # connection_lost was delivered
        self.reading = True
        self.eof_written = False
        self._held: list[bytes] = []  # fed while reading was paused

    # -- the client's side -----------------------------------------------------------------
    def connect(self, protocol: asyncio.BaseProtocol) -> None:
        """What the loop does for an accepted connection."""
        self._protocol = protocol
        protocol.connection_made(self)

    def feed(self, data: bytes) -> None:
        """Bytes from the client; held back (in order) while the protocol paused reading."""
        assert not self.closed, "the server closed this connection"
        if self.reading and not self._held:
            self._data_protocol().data_received(data)
        else:
            self._held.append(data)

    def feed_eof(self) -> None:
        """The client half-closed; a protocol that does not keep the connection open gets it
        closed, as a socket transport would."""
        if not self._data_protocol().eof_received():
            self.close()

    def take(self) -> bytes:
        """Everything written since the last ``take``."""
        out = bytes(self.written)
        self.written.clear()
        return out

    def _data_protocol(self) -> asyncio.Protocol:
        protocol = self._protocol
        assert isinstance(protocol, asyncio.Protocol), protocol
        return protocol

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            self._data_protocol().connection_lost(None)

    def _deliver_held(self) -> None:
        while self._held and self.reading and not self.closed:
            self._data_protocol().data_received(self._held.pop(0))

    # -- asyncio.Transport -----------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.eof_written:
            raise RuntimeError("write() after write_eof()")
        if not self.lost:
            self.written += data

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0  # every write "reached the client" at once

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.call_soon(self._lose)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        if not self.reading:
            self.reading = True
            self.loop.call_soon(self._deliver_held)

    def is_reading(self) -> bool:
        return self.reading and not self.closed

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def __repr__(self) -> str:
        state: Any = "closed" if self.closed else ("reading" if self.reading else "paused")
        return f"<MemoryTransport {state}, {len(self.written)} bytes unread>"
