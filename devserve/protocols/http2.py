"""Sans-IO HTTP/2 server adapter over h2: bytes in, typed events out, bytes to send back.

Rules this adapter keeps (the I/O layer relies on them):
- ``receive(data, now)`` returns frozen events; ``data_to_send()`` returns what must be written.
  Time is passed in, so the rapid-reset guard is tested without a clock.
- A malformed request (RFC 9113 §8.1.1: uppercase or invalid names, connection-specific fields,
  missing or unknown pseudo-headers) is a *stream* error: that stream is reset with
  PROTOCOL_ERROR and never surfaces, the connection keeps working. h2's own inbound validation is
  off for that reason: it turns every malformed header into a connection error (GOAWAY).
- Inbound flow control is credited only through :meth:`ack`, i.e. when the app consumed the
  bytes, so a slow app makes the client wait instead of the server buffering.
- Too many RST_STREAMs from the client within a sliding window (CVE-2023-44487, "rapid reset")
  end the connection with GOAWAY ENHANCE_YOUR_CALM; events after that are dropped.
- Draining is two-phase (RFC 9113 §6.8): PING + GOAWAY(2^31-1) at once, so clients stop opening
  streams; on the PING ACK (or a deadline the caller owns) GOAWAY(last processed stream). h2's
  ``close_connection`` would forbid finishing in-flight streams, so these frames are built here.
- Extended CONNECT (RFC 8441) is allowed only when ``enable_connect_protocol`` advertised it:
  then ``:protocol`` (with ``:scheme``, ``:path``, ``:authority``) opens a tunnel such as a
  WebSocket; without it, ``:protocol`` is malformed like any unknown pseudo-header.
- Keepalive PINGs (:meth:`H2Server.ping`) surface their ACK as :class:`PingAcked`; the caller
  owns the interval and the deadline.
- The adapter never touches a socket, a clock or the event loop.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from devserve.protocols.http2_fields import (
    Headers,
    MalformedRequest,
    parse_request_head,
    response_headers,
    trailer_headers,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_STREAM_ID = 2**31 - 1
DEFAULT_WINDOW = 65535
CONNECTION_WINDOW_CAP = 16 * 1024 * 1024
RAPID_RESET_LIMIT = 200  # client resets tolerated per window ...
RAPID_RESET_WINDOW = 10.0  # ... of this many seconds
_DRAIN_PING = b"devsrvGA"


# -- events ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RequestOpened:
    """A valid request head; ``headers`` are regular fields with ``host`` first (ASGI)."""

    stream_id: int
    method: bytes
    target: bytes
    headers: Headers
    end_stream: bool
    expects_continue: bool
    protocol: bytes | None = None  # extended CONNECT (RFC 8441): ``:protocol``, e.g. websocket


@dataclass(frozen=True, slots=True)
class BodyData:
    """Request body bytes; ``flow_length`` (padding included) is what :meth:`ack` credits."""

    stream_id: int
    data: bytes
    flow_length: int


@dataclass(frozen=True, slots=True)
class BodyEnd:
    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The client reset the stream (or h2 did while processing its frames)."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class ConnectionEnded:
    """No more frames can be exchanged: the peer sent GOAWAY or we hit a connection error
    (then a GOAWAY is already in :meth:`H2Server.data_to_send`)."""

    error_code: int
    by_peer: bool
    reason: str


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """Outbound flow-control credit grew; 0 means the connection (or every stream)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class SettingsChanged:
    """The client changed settings (``{code: new value}``); a new initial window or frame size
    changes what every blocked stream may send."""

    changed: dict[int, int]


@dataclass(frozen=True, slots=True)
class DrainAcked:
    """The client answered the drain PING: it has seen the first GOAWAY."""


@dataclass(frozen=True, slots=True)
class PingAcked:
    """The client answered a keepalive PING (any PING but the drain one)."""

    data: bytes


H2Event = (
    RequestOpened | BodyData | BodyEnd | StreamReset | ConnectionEnded | WindowOpened
    | SettingsChanged | DrainAcked | PingAcked
)



# -- the connection ----------------------------------------------------------------------------
class H2Server:
    """One HTTP/2 server connection's protocol state (h2 underneath)."""

    def __init__(
        self,
        *,
        max_concurrent_streams: int = 100,
        max_header_list_size: int = 16 * 1024,
        rapid_reset_limit: int = RAPID_RESET_LIMIT,
        rapid_reset_window: float = RAPID_RESET_WINDOW,
        enable_connect_protocol: bool = False,
    ) -> None:
        config = h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False
        )
        conn = h2.connection.H2Connection(config=config)
        codes = h2.settings.SettingCodes
        initial = {
            codes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
            codes.MAX_HEADER_LIST_SIZE: max_header_list_size,
        }
        if enable_connect_protocol:
            initial[codes.ENABLE_CONNECT_PROTOCOL] = 1
        conn.local_settings = h2.settings.Settings(client=False, initial_values=initial)
        if not enable_connect_protocol:  # h2 would send it as 0: say nothing instead
            del conn.local_settings[codes.ENABLE_CONNECT_PROTOCOL]
        conn.decoder.max_header_list_size = max_header_list_size
        self._h2 = conn
        self._max_streams = max_concurrent_streams
        self._connect_protocol = enable_connect_protocol
        self._reset_limit = rapid_reset_limit
        self._reset_window = rapid_reset_window
        self._resets: deque[float] = deque()
        self._pending = b""  # frames built here, sent before h2's own buffer
        self._rejected: set[int] = set()  # reset by us in this read: drop their later events
        self.last_stream_id = 0  # highest stream surfaced as RequestOpened
        self.goaway_last: int | None = None  # set by the final drain GOAWAY
        self.draining = False
        self.ended = False

    # -- set-up ----------------------------------------------------------------------------
    def initiate(self, upgrade_settings: bytes | None = None) -> None:
        """Queue the server preface; for an ``Upgrade: h2c`` switch, apply the client's
        HTTP2-Settings and open stream 1 (half-closed remote: the upgraded request)."""
        if upgrade_settings is not None:
            self._h2.initiate_upgrade_connection(upgrade_settings)
            self.last_stream_id = 1
        else:
            self._h2.initiate_connection()
        # The connection window only needs to cover the streams' windows: raise it so one
        # slow stream's unconsumed body cannot stall uploads on every other stream.
        target = min(self._max_streams * DEFAULT_WINDOW, CONNECTION_WINDOW_CAP)
        if target > DEFAULT_WINDOW:
            self._h2.increment_flow_control_window(target - DEFAULT_WINDOW)

    # -- input -----------------------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> list[H2Event]:
        if self.ended:
            return []
        try:
            raw = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.ended = True
            code = int(getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR))
            if self._h2.state_machine.state != h2.connection.ConnectionState.CLOSED:
                self._h2.close_connection(code)  # a bad preface fails before h2 sends GOAWAY
            return [ConnectionEnded(code, False, str(exc) or type(exc).__name__)]
        # h2 handles frames for streams closed earlier; only this read's events need filtering.
        self._rejected.clear()
        reset_now = {e.stream_id for e in raw if isinstance(e, h2.events.StreamReset)}
        events: list[H2Event] = []
        for event in raw:
            if isinstance(event, h2.events.RequestReceived):
                opened = self._on_request(event, reset_now)
                if opened is not None:
                    events.append(opened)
            elif isinstance(event, h2.events.DataReceived):
                sid = event.stream_id
                if sid in self._rejected or sid in reset_now:
                    self._ack_connection(event.flow_controlled_length, sid)
                else:
                    events.append(BodyData(sid, event.data, event.flow_controlled_length))
            elif isinstance(event, h2.events.StreamEnded):
                if event.stream_id not in self._rejected and event.stream_id not in reset_now:
                    events.append(BodyEnd(event.stream_id))
            elif isinstance(event, h2.events.StreamReset):
                if event.remote_reset and self._count_reset(now):
                    events.append(self._calm_down())
                    return events
                sid = event.stream_id
                if sid not in self._rejected and sid <= self.last_stream_id:
                    events.append(StreamReset(sid, int(event.error_code or 0)))
            elif isinstance(event, h2.events.TrailersReceived):
                # ASGI has no request trailers: check them, then drop them.
                if any(n[:1] == b":" for n, _ in event.headers or ()):
                    self._reject(event.stream_id)
                    events.append(StreamReset(event.stream_id, int(ErrorCodes.PROTOCOL_ERROR)))
            elif isinstance(event, h2.events.WindowUpdated):
                events.append(WindowOpened(event.stream_id))
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                events.append(SettingsChanged(
                    {int(k): int(v.new_value) for k, v in event.changed_settings.items()}))
            elif isinstance(event, h2.events.PingAckReceived):
                if event.ping_data == _DRAIN_PING:
                    events.append(DrainAcked())
                else:
                    events.append(PingAcked(bytes(event.ping_data)))
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.ended = True
                code = int(event.error_code or 0)
                events.append(ConnectionEnded(code, True, "GOAWAY from the client"))
                return events
        return events

    def _on_request(
        self, event: h2.events.RequestReceived, reset_now: set[int]
    ) -> RequestOpened | None:
        sid = event.stream_id
        if self.goaway_last is not None and sid > self.goaway_last:
            self._h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)  # safe for the client to retry
            self._rejected.add(sid)
            return None
        try:
            method, target, headers, protocol = parse_request_head(
                list(event.headers or ()), connect_protocol=self._connect_protocol)
        except MalformedRequest:
            self._reject(sid)
            return None
        if sid in reset_now:
            return None  # opened and cancelled in the same read: never start the app
        self.last_stream_id = max(self.last_stream_id, sid)
        expects = any(n == b"expect" and v.lower() == b"100-continue" for n, v in headers)
        return RequestOpened(sid, method, target, headers, event.stream_ended is not None,
                             expects, protocol)

    def _reject(self, stream_id: int) -> None:
        self._rejected.add(stream_id)
        try:
            self._h2.reset_stream(stream_id, ErrorCodes.PROTOCOL_ERROR)
        except h2.exceptions.StreamClosedError:
            pass

    def _count_reset(self, now: float) -> bool:
        resets = self._resets
        resets.append(now)
        horizon = now - self._reset_window
        while resets and resets[0] < horizon:
            resets.popleft()
        return len(resets) > self._reset_limit

    def _calm_down(self) -> ConnectionEnded:
        self.ended = True
        self._h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM, last_stream_id=self.last_stream_id)
        return ConnectionEnded(int(ErrorCodes.ENHANCE_YOUR_CALM), False, "rapid reset")

    # -- output ----------------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        data = self._h2.data_to_send()
        if self._pending:
            data, self._pending = self._pending + data, b""
        return data

    def send_head(self, stream_id: int, status: int, headers: Headers, end_stream: bool) -> None:
        self._h2.send_headers(stream_id, response_headers(status, headers), end_stream=end_stream)

    def send_continue(self, stream_id: int) -> None:
        self._h2.send_headers(stream_id, [(b":status", b"100")])

    def send_data(self, stream_id: int, data: bytes | bytearray, end_stream: bool) -> int:
        """Send what flow control allows now; END_STREAM only once all of *data* went out.
        Returns the number of bytes sent."""
        conn = self._h2
        window = conn.local_flow_control_window(stream_id)
        frame = conn.max_outbound_frame_size
        total = len(data)
        if total == 0:
            if end_stream:
                conn.end_stream(stream_id)
            return 0
        if total <= window and total <= frame:  # the common case: one frame, no copy
            conn.send_data(stream_id, bytes(data), end_stream=end_stream)
            return total
        sent = 0
        with memoryview(data) as view:  # released before the caller resizes its buffer
            while sent < total and window > 0:
                size = min(total - sent, window, frame)
                last = end_stream and sent + size == total
                conn.send_data(stream_id, bytes(view[sent:sent + size]), end_stream=last)
                sent += size
                window -= size
        return sent

    def send_trailers(self, stream_id: int, headers: Headers) -> None:
        self._h2.send_headers(stream_id, trailer_headers(headers), end_stream=True)

    def window(self, stream_id: int) -> int:
        return int(self._h2.local_flow_control_window(stream_id))

    def ack(self, stream_id: int, nbytes: int) -> None:
        """The app consumed *nbytes* of this stream's body: grant the client more credit."""
        if nbytes > 0 and not self.ended:
            self._h2.acknowledge_received_data(nbytes, stream_id)

    def _ack_connection(self, nbytes: int, stream_id: int) -> None:
        if nbytes > 0:
            self._h2.acknowledge_received_data(nbytes, stream_id)

    def reset(self, stream_id: int, code: int = ErrorCodes.INTERNAL_ERROR) -> None:
        if self.ended:
            return
        try:
            self._h2.reset_stream(stream_id, code)
        except h2.exceptions.StreamClosedError:
            pass

    def ping(self, payload: bytes) -> None:
        """A keepalive PING (8 bytes); its ACK comes back as :class:`PingAcked`."""
        if not self.ended:
            self._h2.ping(payload)

    # -- closing ---------------------------------------------------------------------------
    def start_drain(self) -> None:
        """Phase 1: PING + GOAWAY(2^31-1); streams are still accepted until :meth:`finish_drain`."""
        if self.draining or self.ended:
            return
        self.draining = True
        # PING first: h2-based clients reject any frame after a GOAWAY, even a PING.
        self._h2.ping(_DRAIN_PING)
        self._goaway(MAX_STREAM_ID, 0)

    def finish_drain(self) -> None:
        """Phase 2: GOAWAY(last processed stream); newer streams are refused from now on."""
        if self.goaway_last is not None or self.ended:
            return
        self.goaway_last = self.last_stream_id
        self._goaway(self.last_stream_id, 0)

    def close(self, error_code: int = ErrorCodes.NO_ERROR) -> None:
        """A final GOAWAY before the I/O layer closes the transport."""
        if self.ended:
            return
        self.ended = True
        if self.goaway_last is None:
            self._goaway(self.last_stream_id, error_code)

    def _goaway(self, last_stream_id: int, error_code: int) -> None:
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = error_code
        self._pending += self._h2.data_to_send() + frame.serialize()
