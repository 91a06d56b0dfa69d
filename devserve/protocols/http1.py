"""Sans-IO HTTP/1.1 server adapter over h11: bytes in, typed events out, bytes to send back.

Rules this adapter keeps (the I/O layer relies on them):
- ``feed(data)`` buffers; ``next_events()`` yields every event h11 can produce *now* and stops
  at NEED_DATA or PAUSED. PAUSED means a pipelined request is waiting for the current response
  to finish; call ``start_next_cycle()`` after the response and then ``next_events()`` again.
  Requests are therefore answered strictly in order.
- A request that breaks the protocol or a limit becomes one :class:`BadRequest` event carrying
  the status (400, 413, 431, 501); the caller writes ``error_response(status)`` and closes. After
  that the adapter repeats the same event: nothing more is parsed on that connection.
- Strict RFC 9112 framing: h11 already rejects bare CR, whitespace before the colon, invalid or
  conflicting Content-Length, a missing or repeated Host and bad chunk sizes. Where it is lenient
  the adapter checks the raw head before h11 parses it (:func:`head_violation`: obs-fold,
  Content-Length with Transfer-Encoding, Transfer-Encoding on HTTP/1.0 or without chunked last)
  and the parsed head after (a Host value that is not ``host[:port]``). A raw head is looked at
  once, when its blank line has arrived, so a head trickled in byte by byte costs no rescans.
- The adapter never touches a socket, a clock or the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

import h11

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class RequestHead:
    """Request line and headers; ``headers`` names are lower-cased as ASGI requires."""

    method: bytes
    target: bytes
    http_version: bytes
    headers: Headers
    expects_continue: bool


@dataclass(frozen=True, slots=True)
class BodyChunk:
    data: bytes


@dataclass(frozen=True, slots=True)
class RequestEnd:
    pass


@dataclass(frozen=True, slots=True)
class ClientEOF:
    """The client closed its sending side (or the whole connection)."""


@dataclass(frozen=True, slots=True)
class BadRequest:
    status: int
    reason: str


H1Event = RequestHead | BodyChunk | RequestEnd | ClientEOF | BadRequest

# The one reason-phrase table (status lines exist only in HTTP/1.1): RFC 9110's names, also
# where the running Python still spells an older one (3.13 renamed these four).
_PHRASES = {int(s): s.phrase.encode("ascii") for s in HTTPStatus} | {
    413: b"Content Too Large",
    414: b"URI Too Long",
    416: b"Range Not Satisfiable",
    422: b"Unprocessable Content",
}


def reason_phrase(status: int) -> bytes:
    """The reason phrase of *status* for a status line; ``b""`` for a code without one."""
    return _PHRASES.get(status, b"")

# The end of a head, as h11 finds it (a line feed, an optional CR, a line feed).
_HEAD_END = re.compile(rb"\n\r?\n")
# A field line that starts with SP or HTAB continues the previous one (obs-fold, RFC 9112 5.2).
_OBS_FOLD = re.compile(rb"\n[ \t]")
_CONTENT_LENGTH = re.compile(rb"\ncontent-length:", re.IGNORECASE)
_TRANSFER_ENCODING = re.compile(rb"\ntransfer-encoding:([^\n]*)", re.IGNORECASE)
# Host = uri-host [ ":" port ] (RFC 9112 3.2, RFC 3986 3.2.2): an IP literal or a reg-name of
# unreserved, pct-encoded and sub-delims characters; empty is allowed (no authority).
_HOST = re.compile(
    rb"(?:\[[0-9A-Za-z._~!$&'()*+,;=:%-]+\]|(?:[0-9A-Za-z._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*)"
    rb"(?::[0-9]*)?"
)


def head_violation(head: bytes) -> str | None:
    """Why a complete raw request *head* (request line and field lines, without the blank line
    that ends it) must be answered 400 although h11 would accept it, or None.

    h11 replaces obs-fold with a space, lets Transfer-Encoding override Content-Length and does
    not look at the HTTP version; each of those leaves room for request smuggling behind a proxy
    that reads the same bytes differently (RFC 9112 5.2, 6.1, 6.3).
    """
    if _OBS_FOLD.search(head):
        return "obsolete line folding (a field line starting with whitespace)"
    values = _TRANSFER_ENCODING.findall(head)
    if not values:
        return None
    if _CONTENT_LENGTH.search(head):
        return "both Content-Length and Transfer-Encoding"
    if head.partition(b"\n")[0].rstrip(b"\r").endswith(b" HTTP/1.0"):
        return "Transfer-Encoding on an HTTP/1.0 request"
    codings = [c.strip(b" \t\r").lower() for value in values for c in value.split(b",")]
    codings = [c for c in codings if c]
    if not codings or codings[-1] != b"chunked":
        return "Transfer-Encoding does not end with chunked"
    if codings.count(b"chunked") > 1:
        return "chunked applied more than once"
    return None  # chunked last; any other coding is h11's 501 (not understood)


class H1Connection:
    """One HTTP/1.1 server connection's protocol state."""

    __slots__ = (
        "_body_limit",
        "_body_received",
        "_conn",
        "_max_fields",
        "_max_head",
        "_rejected",
        "_tail",
        "_unscreened",
        "paused",
    )

    def __init__(
        self,
        *,
        max_incomplete_event_size: int = 16 * 1024,
        max_fields: int = 100,
        max_body_size: int | None = None,
    ) -> None:
        self._conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=max_incomplete_event_size
        )
        self._max_fields = max_fields
        self._max_head = max_incomplete_event_size
        self._body_limit = max_body_size
        self._body_received = 0
        self.paused = False  # h11 holds a pipelined request until start_next_cycle()
        self._rejected: BadRequest | None = None
        self._unscreened = False  # the buffer may hold a complete head not yet screened
        self._tail = b""  # last two bytes fed: a head's blank line may span two reads

    # -- input -----------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Buffer bytes from the peer; ``b""`` means the peer closed its side."""
        if data:
            if not self._unscreened:
                self._unscreened = bool(
                    _HEAD_END.search(data) or _HEAD_END.search(self._tail + data[:2])
                )
            self._tail = data[-2:] if len(data) >= 2 else (self._tail + data)[-2:]
        try:
            self._conn.receive_data(data)
        except RuntimeError:
            # Data after our side closed (e.g. after an error response): nothing to do.
            pass

    def next_events(self) -> list[H1Event]:
        """Every event available without more input, stopping at NEED_DATA or PAUSED."""
        if self._rejected is not None:
            return [self._rejected]
        events: list[H1Event] = []
        conn = self._conn
        while True:
            if self._unscreened and conn.their_state is h11.IDLE:
                rejected = self._screen_head()
                if rejected is not None:
                    self._rejected = rejected
                    events.append(rejected)
                    return events
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                self._rejected = BadRequest(status, str(exc) or "malformed request")
                events.append(self._rejected)
                return events
            if event is h11.NEED_DATA:
                return events
            if event is h11.PAUSED:
                self.paused = True
                return events
            if isinstance(event, h11.Data):
                self._body_received += len(event.data)
                if self._body_limit is not None and self._body_received > self._body_limit:
                    self._rejected = BadRequest(413, "request body exceeds the limit")
                    events.append(self._rejected)
                    return events
                events.append(BodyChunk(bytes(event.data)))
            elif isinstance(event, h11.Request):
                head = self._make_head(event)
                if isinstance(head, BadRequest):
                    self._rejected = head
                    events.append(head)
                    return events
                self._body_received = 0
                events.append(head)
            elif isinstance(event, h11.EndOfMessage):
                events.append(RequestEnd())
            elif isinstance(event, h11.ConnectionClosed):
                events.append(ClientEOF())
                return events

    def _screen_head(self) -> BadRequest | None:
        """Check the head at the start of h11's buffer (the next request) once it is whole."""
        data = self._conn.trailing_data[0]
        end = _HEAD_END.search(data)
        if end is None:
            self._unscreened = False  # incomplete: the read that completes it sets the flag
            return None
        # Later bytes (a body, pipelined requests) may hold another head: look again then.
        self._unscreened = _HEAD_END.search(data, end.end()) is not None
        reason = head_violation(data[: end.start()])
        return None if reason is None else BadRequest(400, reason)

    def _make_head(self, event: h11.Request) -> RequestHead | BadRequest:
        headers: Headers = list(event.headers)  # h11 lower-cases names when iterating
        if len(headers) > self._max_fields:
            return BadRequest(431, "too many header fields")
        # h11 only bounds a head still arriving; one that came whole in a read is checked here.
        size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in headers)
        if size > self._max_head:
            return BadRequest(431, "request header fields too large")
        limit = self._body_limit
        for name, value in headers:
            if name == b"host":
                if not _HOST.fullmatch(value):
                    return BadRequest(400, "invalid Host header")
            elif name == b"content-length" and limit is not None and int(value) > limit:
                return BadRequest(413, "request body exceeds the limit")
        return RequestHead(
            method=bytes(event.method),
            target=bytes(event.target),
            http_version=bytes(event.http_version),
            headers=headers,
            expects_continue=self._conn.they_are_waiting_for_100_continue,
        )

    # -- state -----------------------------------------------------------------------------
    @property
    def waiting_for_continue(self) -> bool:
        return self._conn.they_are_waiting_for_100_continue

    @property
    def request_in_progress(self) -> bool:
        """True once any byte of the next request has been parsed into an event."""
        return self._conn.their_state is not h11.IDLE

    def trailing_bytes(self) -> bytes:
        """Bytes received after the current request head (for a protocol switch)."""
        return bytes(self._conn.trailing_data[0])

    @property
    def has_buffered_bytes(self) -> bool:
        """Unparsed input is waiting (copies the buffer: not for the hot path)."""
        return bool(self._conn.trailing_data[0])

    @property
    def response_started(self) -> bool:
        """True once the response head was produced (not merely a request received)."""
        return self._conn.our_state in (h11.SEND_BODY, h11.DONE, h11.MUST_CLOSE, h11.CLOSED)

    @property
    def body_unread(self) -> bool:
        """Our response is complete but the request body is still arriving."""
        return self._conn.our_state is h11.DONE and self._conn.their_state is h11.SEND_BODY

    @property
    def keep_alive(self) -> bool:
        """Whether this connection can serve another request after the current one."""
        return self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE

    def start_next_cycle(self) -> bool:
        """Reset for the next pipelined/keep-alive request; False when it must close."""
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
            self.paused = False
            return True
        return False

    # -- output ----------------------------------------------------------------------------
    def continue_100(self) -> bytes:
        return self._send(
            h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
        )

    def response_head(self, status: int, headers: Iterable[tuple[bytes, bytes]],
                      reason: bytes = b"") -> bytes:
        """Bytes of the status line and headers; raises h11.LocalProtocolError if invalid."""
        return self._send(
            h11.Response(status_code=status, headers=list(headers),
                         reason=reason or reason_phrase(status))
        )

    def body(self, data: bytes) -> bytes:
        if not data:
            return b""
        return self._send(h11.Data(data=data))

    def end(self) -> bytes:
        return self._send(h11.EndOfMessage())

    def error_response(self, status: int, extra_headers: Headers | None = None) -> bytes:
        """A complete short plain-text response that also tells the client we close."""
        reason = reason_phrase(status) or b"Error"
        body = reason + b"\n"
        headers: Headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        if extra_headers:
            headers.extend(extra_headers)
        if not self.response_started and self._conn.our_state is not h11.ERROR:
            try:
                return (
                    self._send(h11.Response(status_code=status, headers=headers, reason=reason))
                    + self._send(h11.Data(data=body))
                    + self._send(h11.EndOfMessage())
                )
            except h11.LocalProtocolError:
                pass
        # h11 refuses once the peer violated the protocol; the bytes are still well formed.
        lines = [b"HTTP/1.1 %d %s" % (status, reason)]
        lines += [name + b": " + value for name, value in headers]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    def _send(self, event: h11.Event) -> bytes:
        data = self._conn.send(event)
        return data or b""
