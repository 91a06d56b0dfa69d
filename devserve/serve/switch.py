"""One protocol takeover: a connection's transport passes from the protocol that read its first
bytes to the one that speaks what they asked for — HTTP/1.1 to HTTP/2 (``Upgrade: h2c``),
HTTP/1.1 to WebSocket, and the cleartext sniffer to HTTP/1.1 or HTTP/2.

The old protocol lets go through its own :meth:`Releasing.release_transport` (timers off, out of
the worker's connection set, reading resumed), so nothing here touches its insides. The new one
registers itself in ``connection_made`` like any connection, then gets the bytes the old one had
read but not used, once and in order. All of it happens in one synchronous step, so the event
loop cannot deliver data to the old protocol in between.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Releasing(Protocol):
    """A protocol that can give its transport away."""

    def release_transport(self) -> None:
        """Stop using the transport for good: closing, timers cancelled, out of the worker's
        connection set, reading resumed if it was paused."""


def take_over(transport: asyncio.Transport, old: Releasing, new: asyncio.Protocol, *,
              preamble: bytes = b"", buffered: bytes = b"") -> None:
    """Hand *transport* from *old* to *new*: *preamble* (e.g. ``101 Switching Protocols``)
    goes out first, *buffered* (bytes read ahead by *old*) is fed to *new* after its
    ``connection_made``."""
    old.release_transport()
    if preamble:
        transport.write(preamble)
    transport.set_protocol(new)
    new.connection_made(transport)
    if buffered:
        new.data_received(buffered)
