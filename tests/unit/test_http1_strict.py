"""RFC 9112 MUST-reject cases through the sans-IO HTTP/1.1 adapter, with real bytes.

Each rejected request must come out as one ``BadRequest(400)`` (never as a ``RequestHead`` the app
would see), the error response must say ``connection: close``, and nothing fed afterwards (a
smuggled second request) may surface. Requests that only look suspicious (HTTP/1.0 without Host,
repeated equal Content-Length, bodies full of folds) must still pass.

Which layer rejects what: h11 itself rejects bare CR, whitespace before the colon, bad or
conflicting Content-Length, a missing or repeated Host and bad chunk framing; the adapter adds
obs-fold, Content-Length with Transfer-Encoding, Transfer-Encoding on HTTP/1.0 or not ending in
chunked, and invalid Host values (``head_violation`` and ``H1Connection._make_head``).
"""

from __future__ import annotations

import pytest

from devserve.protocols.http1 import (
    BadRequest,
    BodyChunk,
    H1Connection,
    H1Event,
    RequestEnd,
    RequestHead,
    head_violation,
)
from tests.h11_client import only_response

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def head(*lines: bytes, start: bytes = b"POST /echo HTTP/1.1") -> bytes:
    return b"\r\n".join((start, *lines)) + b"\r\n\r\n"


# name → raw request bytes; every one must be answered 400 and closed.
REJECTED_BY_ADAPTER: dict[str, bytes] = {
    "content-length+transfer-encoding": head(
        b"Host: x", b"Content-Length: 5", b"Transfer-Encoding: chunked") + b"0\r\n\r\n",
    "transfer-encoding+content-length": head(
        b"Host: x", b"Transfer-Encoding: chunked", b"Content-Length: 5") + b"0\r\n\r\n",
    "content-length+transfer-encoding-gzip": head(
        b"Host: x", b"Content-Length: 5", b"Transfer-Encoding: gzip") + b"hello",
    "obs-fold-space": head(b"Host: x", b"X-A: one", b" two", start=b"GET / HTTP/1.1"),
    "obs-fold-tab": head(b"Host: x", b"X-A: one", b"\ttwo", start=b"GET / HTTP/1.1"),
    "obs-fold-blank-continuation": head(b"Host: x", b"X-A: one", b"  ", start=b"GET / HTTP/1.1"),
    "obs-fold-of-content-length": head(b"Host: x", b"Content-Length:", b" 3") + b"abc",
    "transfer-encoding-gzip": head(b"Host: x", b"Transfer-Encoding: gzip") + b"abc",
    "transfer-encoding-chunked-gzip": head(b"Host: x", b"Transfer-Encoding: chunked, gzip")
    + b"0\r\n\r\n",
    "transfer-encoding-identity": head(b"Host: x", b"Transfer-Encoding: identity") + b"abc",
    "transfer-encoding-empty": head(b"Host: x", b"Transfer-Encoding: ") + b"abc",
    "transfer-encoding-chunked-twice": head(b"Host: x", b"Transfer-Encoding: chunked, chunked")
    + b"0\r\n\r\n",
    "transfer-encoding-two-lines": head(
        b"Host: x", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked") + b"0\r\n\r\n",
    "transfer-encoding-http10": head(b"Transfer-Encoding: chunked",
                                     start=b"POST /echo HTTP/1.0") + b"0\r\n\r\n",
    "host-with-space": head(b"Host: a b", start=b"GET / HTTP/1.1"),
    "host-list": head(b"Host: a, b", start=b"GET / HTTP/1.1"),
    "host-userinfo": head(b"Host: user@a", start=b"GET / HTTP/1.1"),
    "host-path": head(b"Host: a/b", start=b"GET / HTTP/1.1"),
    "host-bad-port": head(b"Host: a:80x", start=b"GET / HTTP/1.1"),
    "host-invalid-http10": head(b"Host: a b", start=b"GET / HTTP/1.0"),
}

REJECTED_BY_H11: dict[str, bytes] = {
    "content-length-conflicting-lines": head(
        b"Host: x", b"Content-Length: 1", b"Content-Length: 2") + b"ab",
    "content-length-conflicting-list": head(b"Host: x", b"Content-Length: 1, 2") + b"ab",
    "content-length-plus-sign": head(b"Host: x", b"Content-Length: +2") + b"ab",
    "content-length-minus-sign": head(b"Host: x", b"Content-Length: -2") + b"ab",
    "content-length-hex": head(b"Host: x", b"Content-Length: 0x2") + b"ab",
    "content-length-letters": head(b"Host: x", b"Content-Length: two") + b"ab",
    "content-length-empty": head(b"Host: x", b"Content-Length: ") + b"ab",
    "content-length-underscore": head(b"Host: x", b"Content-Length: 1_0") + b"ab",
    "content-length-overflow": head(b"Host: x", b"Content-Length: " + b"9" * 40) + b"ab",
    "continuation-before-first-field": head(b" Host: x", start=b"GET / HTTP/1.1"),
    "space-before-colon": head(b"Host: x", b"X-A : b", start=b"GET / HTTP/1.1"),
    "tab-before-colon": head(b"Host: x", b"X-A\t: b", start=b"GET / HTTP/1.1"),
    "space-before-colon-host": head(b"Host : x", start=b"GET / HTTP/1.1"),
    "bare-cr-request-line": head(b"Host: x", start=b"GET /\r HTTP/1.1"),
    "bare-cr-in-method": head(b"Host: x", start=b"GET\r/ HTTP/1.1"),
    "bare-cr-header-value": head(b"Host: x", b"X-A: b\rc", start=b"GET / HTTP/1.1"),
    "bare-cr-header-name": head(b"Host: x", b"X\r-A: b", start=b"GET / HTTP/1.1"),
    "nul-in-header-value": head(b"Host: x", b"X-A: b\x00c", start=b"GET / HTTP/1.1"),
    "missing-host-http11": head(b"X-A: b", start=b"GET / HTTP/1.1"),
    "two-hosts": head(b"Host: a", b"Host: b", start=b"GET / HTTP/1.1"),
    "two-equal-hosts": head(b"Host: a", b"Host: a", start=b"GET / HTTP/1.1"),
    "two-hosts-http10": head(b"Host: a", b"Host: b", start=b"GET / HTTP/1.0"),
    "chunk-size-not-hex": head(b"Host: x", b"Transfer-Encoding: chunked")
    + b"zz\r\nab\r\n0\r\n\r\n",
    "chunk-size-negative": head(b"Host: x", b"Transfer-Encoding: chunked")
    + b"-1\r\nab\r\n0\r\n\r\n",
    "chunk-size-plus": head(b"Host: x", b"Transfer-Encoding: chunked") + b"+2\r\nab\r\n0\r\n\r\n",
    "chunk-size-0x": head(b"Host: x", b"Transfer-Encoding: chunked") + b"0x2\r\nab\r\n0\r\n\r\n",
    "chunk-size-overflow": head(b"Host: x", b"Transfer-Encoding: chunked")
    + b"f" * 40 + b"\r\nab\r\n0\r\n\r\n",
    "chunk-data-longer-than-size": head(b"Host: x", b"Transfer-Encoding: chunked")
    + b"2\r\nabXX\r\n0\r\n\r\n",
}

REJECTED = {**REJECTED_BY_ADAPTER, **REJECTED_BY_H11}


def events_of(data: bytes, conn: H1Connection | None = None) -> list[H1Event]:
    conn = conn or H1Connection()
    conn.feed(data)
    return conn.next_events()


def body_of(events: list[H1Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, BodyChunk))


@pytest.mark.parametrize("data", REJECTED.values(), ids=REJECTED.keys())
def test_rejected_with_400_and_close(data: bytes) -> None:
    conn = H1Connection()
    events = events_of(data + SMUGGLED, conn)
    assert not any(isinstance(e, RequestHead) and e.target == b"/smuggled" for e in events)
    assert isinstance(events[-1], BadRequest), events
    assert events[-1].status == 400, events[-1]
    response, _ = only_response(conn.error_response(400))
    assert response.status_code == 400
    assert (b"connection", b"close") in response.headers
    # Latched: more input never yields a request on this connection.
    conn.feed(SMUGGLED)
    assert conn.next_events() == [events[-1]]


@pytest.mark.parametrize("data", REJECTED_BY_ADAPTER.values(), ids=REJECTED_BY_ADAPTER.keys())
def test_adapter_cases_never_reach_the_app(data: bytes) -> None:
    """The adapter's own checks reject before any RequestHead, so the app never runs."""
    events = events_of(data)
    assert events == [events[-1]] and isinstance(events[-1], BadRequest), events


@pytest.mark.parametrize("data", REJECTED.values(), ids=REJECTED.keys())
def test_rejected_when_fed_byte_by_byte(data: bytes) -> None:
    """The head's blank line (and a fold) arriving split over reads is still seen."""
    conn = H1Connection()
    events: list[H1Event] = []
    for i in range(len(data)):
        conn.feed(data[i:i + 1])
        events += conn.next_events()
        if events and isinstance(events[-1], BadRequest):
            break
    assert isinstance(events[-1], BadRequest) and events[-1].status == 400, events


def test_unknown_coding_before_chunked_is_501() -> None:
    """RFC 9112 6.1: a coding we do not understand (but chunked last) SHOULD be 501."""
    conn = H1Connection()
    events = events_of(head(b"Host: x", b"Transfer-Encoding: gzip, chunked") + b"0\r\n\r\n", conn)
    assert isinstance(events[-1], BadRequest) and events[-1].status == 501
    response, body = only_response(conn.error_response(501))
    assert (response.status_code, response.reason, body) == (
        501, b"Not Implemented", b"Not Implemented\n")
    assert (b"connection", b"close") in response.headers


# --- what must still pass ---------------------------------------------------------------------

FOLDED_BODY = b"a\n b\n\tc\n\nd\r\n \r\n\r\n"
ACCEPTED: dict[str, tuple[bytes, bytes]] = {  # name → (request, body the app must see)
    "http10-without-host": (head(start=b"GET / HTTP/1.0"), b""),
    "content-length-equal-lines": (
        head(b"Host: x", b"Content-Length: 2", b"Content-Length: 2") + b"ab", b"ab"),
    "content-length-equal-list": (head(b"Host: x", b"Content-Length: 2, 2") + b"ab", b"ab"),
    "chunked-any-case": (
        head(b"Host: x", b"transfer-encoding: Chunked") + b"2\r\nab\r\n0\r\n\r\n", b"ab"),
    "host-with-port": (head(b"Host: example.com:8080", start=b"GET / HTTP/1.1"), b""),
    "host-ipv6": (head(b"Host: [::1]:8000", start=b"GET / HTTP/1.1"), b""),
    "host-ipv4": (head(b"Host: 127.0.0.1", start=b"GET / HTTP/1.1"), b""),
    "host-empty": (head(b"Host:", start=b"GET / HTTP/1.1"), b""),
    "host-punycode-underscore": (head(b"Host: xn--bcher-kva.my_host", start=b"GET / HTTP/1.1"),
                                 b""),
    "body-with-folds-and-blank-lines": (
        head(b"Host: x", b"Content-Length: %d" % len(FOLDED_BODY)) + FOLDED_BODY, FOLDED_BODY),
    "chunked-body-with-folds": (
        head(b"Host: x", b"Transfer-Encoding: chunked") + b"6\r\n\n x\n\n\n\r\n0\r\n\r\n",
        b"\n x\n\n\n"),
    "field-value-with-inner-spaces": (head(b"Host: x", b"X-A: one  two\t three",
                                           start=b"GET / HTTP/1.1"), b""),
    "content-length-in-value-is-not-a-header": (
        head(b"Host: x", b"X-Note: content-length: 9", b"Transfer-Encoding: chunked")
        + b"0\r\n\r\n", b""),
}


@pytest.mark.parametrize(("data", "body"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted(data: bytes, body: bytes) -> None:
    events = events_of(data)
    assert isinstance(events[0], RequestHead), events
    assert isinstance(events[-1], RequestEnd), events
    assert body_of(events) == body


def respond(conn: H1Connection) -> None:
    conn.response_head(200, [(b"content-length", b"0")])
    conn.end()
    assert conn.start_next_cycle()


def test_pipelined_requests_are_each_screened() -> None:
    """A valid request whose body looks like a folded head, then a folded head: the second is
    rejected, the first served, and the bytes in between are never mistaken for a head."""
    fold_body = b"X: a\r\n b\r\n\r\n"
    first = head(b"Host: x", b"Content-Length: %d" % len(fold_body)) + fold_body
    second = head(b"Host: x", b"Content-Length: 0")
    third = head(b"Host: x", b"X-A: one", b" two", start=b"GET / HTTP/1.1")
    conn = H1Connection()
    events = events_of(first + second + third, conn)
    assert [type(e) for e in events] == [RequestHead, BodyChunk, RequestEnd]
    assert body_of(events) == fold_body
    respond(conn)
    assert [type(e) for e in conn.next_events()] == [RequestHead, RequestEnd]
    respond(conn)
    events = conn.next_events()
    assert len(events) == 1 and isinstance(events[0], BadRequest) and events[0].status == 400


def test_blank_line_split_across_reads() -> None:
    """The end of a folded head spans two reads (``\\r\\n\\r`` then ``\\n``)."""
    data = head(b"Host: x", b"X-A: one", b" two", start=b"GET / HTTP/1.1")
    conn = H1Connection()
    conn.feed(data[:-1])
    assert conn.next_events() == []
    conn.feed(data[-1:])
    events = conn.next_events()
    assert len(events) == 1 and isinstance(events[0], BadRequest) and events[0].status == 400


def test_keep_alive_then_smuggling_attempt() -> None:
    """A clean first request on a connection does not make the second one trusted."""
    conn = H1Connection()
    assert isinstance(events_of(head(b"Host: x", start=b"GET / HTTP/1.1"), conn)[0], RequestHead)
    respond(conn)
    attack = head(b"Host: x", b"Content-Length: 4", b"Transfer-Encoding: chunked") + b"0\r\n\r\n"
    events = events_of(attack + SMUGGLED, conn)
    assert len(events) == 1 and isinstance(events[0], BadRequest) and events[0].status == 400


@pytest.mark.parametrize(("raw_head", "reason"), [
    (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c", "obsolete line folding"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTRANSFER-ENCODING: chunked\r\nCONTENT-LENGTH: 1",
     "both Content-Length and Transfer-Encoding"),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked", "HTTP/1.0"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;x=1", "does not end with chunked"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
     "more than once"),
])
def test_head_violation_reasons(raw_head: bytes, reason: str) -> None:
    found = head_violation(raw_head)
    assert found is not None and reason in found


@pytest.mark.parametrize("raw_head", [
    b"GET / HTTP/1.1\r\nHost: x",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,chunked,",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3",
    b"GET / HTTP/1.0",
])
def test_head_violation_none(raw_head: bytes) -> None:
    assert head_violation(raw_head) is None
