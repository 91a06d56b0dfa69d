"""Sans-IO HTTP/3 for the server: aioquic's ``QuicConnection`` + ``H3Connection`` behind a small
surface of frozen events, and the endpoint that routes datagrams to connections.

Rules:
- Time is passed in (``now``); nothing here reads a clock, sleeps or touches a socket. The
  worker feeds datagrams in, sends :meth:`H3Endpoint.take_replies` and each connection's
  :meth:`H3ServerConnection.datagrams` out, and calls ``handle_timer`` at :meth:`timer`.
- A datagram is routed by its destination connection ID (``pull_quic_header``); every ID a
  connection issues or retires is tracked, so migrated/rotated IDs reach the same connection.
  Unparseable datagrams, non-Initial packets for unknown IDs and short Initials are dropped
  silently (never answered: that would make us a reflector); an unknown version gets one
  Version Negotiation packet. With ``retry`` on, new clients must echo a Retry token first.
- Request-body backpressure: a stream the app is not reading (:meth:`pause_stream`) gets no
  more MAX_STREAM_DATA credit, so a client can buffer at most one window on us per stream.
- aioquic's public API only; what it lacks goes through :mod:`.aioquic_internals`, the one
  place that touches its private names. A datagram aioquic fails on is logged (once per kind)
  and dropped: one bad packet must not take the endpoint down.
"""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass
from typing import Any

from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3_ALPN, ErrorCode, FrameType, H3Connection, encode_frame
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress
from aioquic.quic.packet import (
    QuicHeader,
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
)
from aioquic.quic.retry import QuicRetryTokenHandler

from devserve.protocols.aioquic_internals import PausableQuic, control_stream_id, read_header

logger = logging.getLogger("devserve.error")

MIN_INITIAL_SIZE = 1200  # RFC 9000 §14.1: a client Initial is padded to at least this
MAX_STREAM_DATA = 256 * 1024  # per-stream receive window (also the most a paused stream buffers)
MAX_DATA = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RequestOpened:
    stream_id: int
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]  # regular headers; ``host`` added from ``:authority``
    end_stream: bool


@dataclass(frozen=True, slots=True)
class BodyData:
    stream_id: int
    data: bytes
    end_stream: bool


@dataclass(frozen=True, slots=True)
class StreamReset:
    stream_id: int


@dataclass(frozen=True, slots=True)
class ConnectionEnded:
    reason: str


H3Event = RequestOpened | BodyData | StreamReset | ConnectionEnded


def server_configuration(certfile: str, keyfile: str | None, password: str | None, *,
                         idle_timeout: float, max_stream_data: int = MAX_STREAM_DATA
                         ) -> QuicConfiguration:
    """The QUIC/TLS 1.3 settings of the server side (ALPN h3)."""
    configuration = QuicConfiguration(
        is_client=False, alpn_protocols=H3_ALPN, idle_timeout=idle_timeout,
        max_stream_data=max_stream_data, max_data=MAX_DATA,
    )
    configuration.load_cert_chain(certfile, keyfile, password=password)
    return configuration


class H3ServerConnection:
    """One QUIC connection speaking HTTP/3; the owner sends what :meth:`datagrams` returns."""

    def __init__(self, configuration: QuicConfiguration, original_cid: bytes,
                 retry_cid: bytes | None, max_streams: int) -> None:
        quic = PausableQuic(configuration=configuration, max_streams_bidi=max_streams,
                            original_destination_connection_id=original_cid,
                            retry_source_connection_id=retry_cid)
        self.quic = quic
        self.h3: H3Connection | None = None  # created at the handshake (ALPN known then)
        self.cids: set[bytes] = {quic.host_cid, original_cid}
        self.retired: list[bytes] = []
        self.ended = False
        self.goaway_sent = False
        self.goaway_id: int | None = None  # streams at or above it are refused after GOAWAY
        self.last_stream_id = 0  # highest client stream accepted (for GOAWAY)
        self.h3_requests = 0

    # -- input -----------------------------------------------------------------------------
    def receive(self, data: bytes, addr: NetworkAddress, now: float) -> list[H3Event]:
        self.quic.receive_datagram(data, addr, now)
        return self._events()

    def handle_timer(self, now: float) -> list[H3Event]:
        if self.quic.get_timer() is None:
            return []  # terminated: aioquic's handle_timer would compare against None
        self.quic.handle_timer(now)
        return self._events()

    def timer(self) -> float | None:
        return self.quic.get_timer()

    def _events(self) -> list[H3Event]:
        out: list[H3Event] = []
        quic = self.quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, qe.ProtocolNegotiated) and self.h3 is None:
                self.h3 = H3Connection(quic)
            elif isinstance(event, qe.ConnectionIdIssued):
                self.cids.add(event.connection_id)
            elif isinstance(event, qe.ConnectionIdRetired):
                self.cids.discard(event.connection_id)
                self.retired.append(event.connection_id)
            elif isinstance(event, qe.ConnectionTerminated):
                if not self.ended:
                    self.ended = True
                    out.append(ConnectionEnded(event.reason_phrase or f"code {event.error_code}"))
                continue
            elif isinstance(event, qe.StreamReset | qe.StopSendingReceived):
                # RESET_STREAM, or STOP_SENDING after the request ended: either way nobody
                # wants the response any more (a request with FIN reports only the latter).
                quic.paused.discard(event.stream_id)
                out.append(StreamReset(event.stream_id))
            if self.h3 is not None:
                for h3_event in self.h3.handle_event(event):
                    translated = self._translate(h3_event)
                    if translated is not None:
                        out.append(translated)
        return out

    def _translate(self, event: Any) -> H3Event | None:
        if isinstance(event, HeadersReceived):
            fields: dict[bytes, bytes] = {}
            headers: list[tuple[bytes, bytes]] = []
            for name, value in event.headers:
                if name.startswith(b":"):
                    fields[name] = value
                else:
                    headers.append((name, value))
            if b":method" not in fields:
                return None  # trailers (or a malformed head aioquic let through): ignore
            if b":authority" in fields and not any(n == b"host" for n, _ in headers):
                headers.insert(0, (b"host", fields[b":authority"]))
            self.last_stream_id = max(self.last_stream_id, event.stream_id)
            self.h3_requests += 1
            return RequestOpened(event.stream_id, fields[b":method"], fields.get(b":path", b"/"),
                                 headers, event.stream_ended)
        if isinstance(event, DataReceived):
            return BodyData(event.stream_id, event.data, event.stream_ended)
        return None

    # -- output ----------------------------------------------------------------------------
    def datagrams(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        return self.quic.datagrams_to_send(now)

    def send_head(self, stream_id: int, status: int, headers: list[tuple[bytes, bytes]],
                  end: bool) -> None:
        assert self.h3 is not None
        self.h3.send_headers(stream_id, [(b":status", b"%d" % status), *headers], end)

    def send_data(self, stream_id: int, data: bytes, end: bool) -> None:
        assert self.h3 is not None
        self.h3.send_data(stream_id, data, end)

    def send_backlog(self, stream_id: int) -> int:
        """Response bytes queued on *stream_id* and not yet acknowledged (write backpressure)."""
        return self.quic.send_backlog(stream_id)

    def reset(self, stream_id: int, code: int = ErrorCode.H3_INTERNAL_ERROR) -> None:
        """Abort one stream both ways; the connection carries on."""
        self.quic.paused.discard(stream_id)
        # aioquic raises ValueError for a stream it no longer knows (finished and discarded,
        # or never opened): then there is nothing left to abort in that direction.
        try:
            self.quic.reset_stream(stream_id, code)
        except ValueError:
            pass
        self.stop_reading(stream_id, code)

    def stop_reading(self, stream_id: int, code: int = ErrorCode.H3_NO_ERROR) -> None:
        """STOP_SENDING: nobody will read the rest of the request body (with the default
        code, because the response is already complete)."""
        try:
            self.quic.stop_stream(stream_id, code)
        except ValueError:
            pass  # a stream aioquic no longer knows: its receiving part is over anyway

    def pause_stream(self, stream_id: int) -> None:
        self.quic.paused.add(stream_id)

    def resume_stream(self, stream_id: int) -> None:
        self.quic.paused.discard(stream_id)

    def send_goaway(self) -> None:
        """H3 GOAWAY (RFC 9114 §5.2): no new requests above the last one we accepted."""
        if self.goaway_sent or self.h3 is None or self.ended:
            return
        self.goaway_sent = True
        # Next client-bidi stream id after the last accepted one: everything below may finish.
        self.goaway_id = self.last_stream_id + 4 if self.h3_requests else 0
        control = control_stream_id(self.h3)
        if control is not None:
            frame = encode_frame(FrameType.GOAWAY, encode_uint_var(self.goaway_id))
            self.quic.send_stream_data(control, frame)

    def close(self, code: int = ErrorCode.H3_NO_ERROR, reason: str = "") -> None:
        if not self.ended:
            self.quic.close(error_code=code, reason_phrase=reason)


class H3Endpoint:
    """Routes datagrams to :class:`H3ServerConnection` by connection ID and creates new ones."""

    def __init__(self, configuration: QuicConfiguration, *, max_connections: int = 1000,
                 max_streams: int = 100, retry: bool = False) -> None:
        self.configuration = configuration
        self.max_connections = max_connections
        self.max_streams = max_streams
        self.accepting = True
        self.connections: dict[bytes, H3ServerConnection] = {}
        self.live: set[H3ServerConnection] = set()
        self._replies: list[tuple[bytes, NetworkAddress]] = []
        self._retry = QuicRetryTokenHandler() if retry else None
        self.dropped = 0
        self.failures = 0  # datagrams aioquic failed on (each kind logged once)
        self._logged: set[tuple[str, str, int]] = set()

    def receive(self, data: bytes, addr: NetworkAddress, now: float
                ) -> tuple[H3ServerConnection | None, list[H3Event]]:
        """Feed one datagram; returns the connection it belongs to (None: dropped or answered
        statelessly, see :meth:`take_replies`) and its events."""
        try:
            header = read_header(data, self.configuration.connection_id_length)
        except ValueError:
            self.dropped += 1
            return None, []
        conn = self.connections.get(header.destination_cid)
        new = conn is None
        if conn is None:
            conn = self._new_connection(header, data, addr, now)
            if conn is None:
                return None, []
        try:
            events = conn.receive(data, addr, now)
        except Exception as exc:  # aioquic must not take the endpoint down with one bad packet
            self._log_failure(exc, addr)
            events = []
        if new and conn.quic.in_first_flight:
            # The Initial did not decrypt (junk with a plausible header): keep no state, or a
            # flood of them would fill max_connections with dead entries until they time out.
            self.live.discard(conn)
            self.dropped += 1
            return None, []
        self.track(conn)
        return conn, events

    def _log_failure(self, exc: Exception, addr: NetworkAddress) -> None:
        """Log a failure inside aioquic once per kind (exception type and where it was raised):
        a client repeating one bad packet must not flood the log; :attr:`failures` counts all."""
        self.failures += 1
        frames = traceback.extract_tb(exc.__traceback__)
        where = (frames[-1].filename, frames[-1].lineno or 0) if frames else ("", 0)
        kind = (type(exc).__qualname__, *where)
        if kind in self._logged:
            return
        self._logged.add(kind)
        logger.error("HTTP/3: aioquic failed on a datagram from %s (the connection carries on;"
                     " further failures of this kind are not logged)", addr[0], exc_info=exc)

    def _new_connection(self, header: QuicHeader, data: bytes, addr: NetworkAddress, now: float
                        ) -> H3ServerConnection | None:
        versions = self.configuration.supported_versions
        if (header.packet_type != QuicPacketType.VERSION_NEGOTIATION
                and header.version is not None and header.version not in versions):
            if len(data) >= MIN_INITIAL_SIZE:  # never answer more bytes than we received
                self._replies.append((encode_quic_version_negotiation(
                    source_cid=header.destination_cid, destination_cid=header.source_cid,
                    supported_versions=versions), addr))
            return None
        if (header.packet_type != QuicPacketType.INITIAL or header.version is None
                or len(data) < MIN_INITIAL_SIZE or not self.accepting
                or len(self.live) >= self.max_connections):
            self.dropped += 1
            return None
        original_cid, retry_cid = header.destination_cid, None
        if self._retry is not None:
            if not header.token:
                source_cid = os.urandom(8)
                token = self._retry.create_token(
                    address=addr, original_destination_connection_id=header.destination_cid,
                    retry_source_connection_id=source_cid, now=now)
                self._replies.append((encode_quic_retry(
                    version=header.version, source_cid=source_cid,
                    destination_cid=header.source_cid,
                    original_destination_cid=header.destination_cid, retry_token=token), addr))
                return None
            try:
                original_cid = self._retry.validate_token(
                    address=addr, destination_cid=header.destination_cid, token=header.token,
                    now=now)
            except ValueError:
                self.dropped += 1
                return None
            retry_cid = header.destination_cid
        conn = H3ServerConnection(self.configuration, original_cid, retry_cid, self.max_streams)
        conn.cids.add(header.destination_cid)
        self.live.add(conn)
        return conn

    def track(self, conn: H3ServerConnection) -> None:
        """Keep the CID map in step with what *conn* issued, retired, or that it ended."""
        if conn.ended:
            self.forget(conn)
            return
        for cid in conn.cids:
            self.connections[cid] = conn
        for cid in conn.retired:
            if self.connections.get(cid) is conn:
                del self.connections[cid]
        conn.retired.clear()

    def forget(self, conn: H3ServerConnection) -> None:
        self.live.discard(conn)
        for cid in [c for c, owner in self.connections.items() if owner is conn]:
            del self.connections[cid]

    def take_replies(self) -> list[tuple[bytes, NetworkAddress]]:
        replies, self._replies = self._replies, []
        return replies
