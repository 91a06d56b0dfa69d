"""Every use of aioquic's internals (its underscore names), in one place.

:mod:`devserve.protocols.http3` needs four things aioquic has no public API for:

- per-stream receive credit that stops growing while the app is not reading that stream
  (request-body backpressure): :class:`PausableQuic` overrides ``_write_stream_limits``;
- the MAX_STREAMS (bidirectional) limit the server advertises: ``_local_max_streams_bidi``;
- response bytes of a stream not yet acknowledged (write backpressure): the stream's
  ``sender._buffer_start`` / ``_buffer_stop``, found through ``_streams``;
- whether a new connection is still in its first flight (an Initial that did not decrypt):
  ``_state``; and the HTTP/3 control stream a GOAWAY frame goes on:
  ``H3Connection._local_control_stream_id``;
- the ``Buffer`` that :func:`pull_quic_header` reads a datagram's header from: public only as
  an implicit re-export of the private ``aioquic._buffer`` (strict mypy rejects that spelling).

Written against aioquic 1.7 and valid for 1.x: pyproject pins ``aioquic>=1.7,<2``. Before
widening that pin, check this module (tests/unit/test_http3_protocol.py exercises each helper
through real client/server bytes). Nothing else in devserve touches aioquic's private names.
"""

from __future__ import annotations

from typing import Any

from aioquic._buffer import Buffer
from aioquic.h3.connection import H3Connection
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.packet import QuicHeader, pull_quic_header
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream


class PausableQuic(QuicConnection):
    """A server QuicConnection advertising *max_streams_bidi*, whose per-stream receive credit
    stops growing while a stream is paused (aioquic grows it as bytes arrive, not as the app
    consumes them), so a client can buffer at most one window on us per stream."""

    def __init__(self, *, max_streams_bidi: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.paused: set[int] = set()
        # aioquic has no setting for this; its Limit object is what MAX_STREAMS advertises.
        self._local_max_streams_bidi.value = max_streams_bidi

    def _write_stream_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace,
                             stream: QuicStream) -> None:
        if stream.stream_id in self.paused:
            return
        super()._write_stream_limits(builder, space, stream)

    def send_backlog(self, stream_id: int) -> int:
        """Bytes written on *stream_id* and not yet acknowledged by the peer."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return int(sender._buffer_stop - sender._buffer_start)

    @property
    def in_first_flight(self) -> bool:
        """No packet of the peer has been accepted yet (the handshake has not started)."""
        return bool(self._state == QuicConnectionState.FIRSTFLIGHT)


def control_stream_id(h3: H3Connection) -> int | None:
    """The server's HTTP/3 control stream (None before the connection set it up)."""
    stream_id: int | None = h3._local_control_stream_id
    return stream_id


def read_header(datagram: bytes, host_cid_length: int) -> QuicHeader:
    """The QUIC header at the start of *datagram*; ValueError when it is not one."""
    return pull_quic_header(Buffer(data=datagram), host_cid_length=host_cid_length)
