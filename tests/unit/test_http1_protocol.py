"""The sans-IO HTTP/1.1 adapter (``H1Connection``) with real bytes in and real bytes out.

Output bytes are checked by parsing them with an independent h11 *client*, so the tests hold
the adapter to the protocol rather than to one spelling of it.
"""

from __future__ import annotations

import h11
import pytest

from devserve.protocols.http1 import (
    BadRequest,
    BodyChunk,
    ClientEOF,
    H1Connection,
    RequestEnd,
    RequestHead,
)

GET = b"GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\nX-Mixed-Case: Value\r\n\r\n"


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra)
            + body)


def chunked_post(*chunks: bytes) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    return b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body


def parse_response(data: bytes, method: str = "GET") -> tuple[h11.Response, bytes, bytes]:
    """(response, body, leftover bytes) of the first response in *data*."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    response: h11.Response | None = None
    body = b""
    while True:
        event = client.next_event()
        assert event is not h11.NEED_DATA, f"incomplete response: {data!r}"
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            return response, body, client.trailing_data[0]


def body_of(events: list[object]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, BodyChunk))


def respond(conn: H1Connection, body: bytes = b"ok") -> bytes:
    return (conn.response_head(200, [(b"content-length", str(len(body)).encode())])
            + conn.body(body) + conn.end())


# --- requests in ------------------------------------------------------------------------------


def test_simple_get() -> None:
    conn = H1Connection()
    conn.feed(GET)
    events = conn.next_events()
    assert events == [
        RequestHead(
            method=b"GET",
            target=b"/path?q=1",
            http_version=b"1.1",
            headers=[(b"host", b"example.com"), (b"x-mixed-case", b"Value")],
            expects_continue=False,
        ),
        RequestEnd(),
    ]


def test_head_split_across_many_feeds() -> None:
    conn = H1Connection()
    for i in range(len(GET) - 1):
        conn.feed(GET[i:i + 1])
        assert conn.next_events() == []
    conn.feed(GET[-1:])
    events = conn.next_events()
    assert isinstance(events[0], RequestHead)
    assert events[1:] == [RequestEnd()]


def test_content_length_body_in_pieces() -> None:
    body = bytes(range(256)) * 10
    data = post(body)
    conn = H1Connection()
    conn.feed(data[:60])
    events = conn.next_events()
    conn.feed(data[60:1000])
    events += conn.next_events()
    assert RequestEnd() not in events
    conn.feed(data[1000:])
    events += conn.next_events()
    assert isinstance(events[0], RequestHead)
    assert events[-1] == RequestEnd()
    assert body_of(events) == body


def test_chunked_body() -> None:
    conn = H1Connection()
    conn.feed(chunked_post(b"hello ", b"chunked ", b"world"))
    events = conn.next_events()
    assert body_of(events) == b"hello chunked world"
    assert events[-1] == RequestEnd()


def test_pipelined_requests_pause_until_next_cycle() -> None:
    conn = H1Connection()
    conn.feed(post(b"one") + post(b"two") + GET)
    first = conn.next_events()
    assert body_of(first) == b"one" and first[-1] == RequestEnd()
    assert conn.paused
    assert conn.has_buffered_bytes
    assert conn.next_events() == []  # nothing more until the response is done

    assert conn.start_next_cycle() is False  # not answered yet
    respond(conn)
    assert conn.keep_alive
    assert conn.start_next_cycle() is True
    assert not conn.paused
    second = conn.next_events()
    assert body_of(second) == b"two"

    respond(conn)
    assert conn.start_next_cycle()
    third = conn.next_events()
    assert isinstance(third[0], RequestHead) and third[0].method == b"GET"
    respond(conn)
    assert conn.start_next_cycle()
    assert not conn.has_buffered_bytes
    assert not conn.request_in_progress


def test_request_in_progress_after_first_bytes() -> None:
    conn = H1Connection()
    assert not conn.request_in_progress
    conn.feed(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    conn.next_events()
    assert conn.request_in_progress


def test_expect_100_continue() -> None:
    conn = H1Connection()
    conn.feed(post(b"", b"Expect: 100-continue\r\n").replace(b"Content-Length: 0",
                                                               b"Content-Length: 4"))
    events = conn.next_events()
    head = events[0]
    assert isinstance(head, RequestHead) and head.expects_continue
    assert conn.waiting_for_continue
    interim = conn.continue_100()
    assert interim.startswith(b"HTTP/1.1 100 ") and interim.endswith(b"\r\n\r\n")
    assert not conn.waiting_for_continue
    conn.feed(b"data")
    assert body_of(conn.next_events()) == b"data"


def test_100_continue_has_its_reason_phrase() -> None:
    conn = H1Connection()
    conn.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    conn.next_events()
    assert conn.continue_100() == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_client_eof_between_requests() -> None:
    conn = H1Connection()
    conn.feed(GET)
    conn.next_events()
    respond(conn)
    assert conn.start_next_cycle()
    conn.feed(b"")
    assert conn.next_events() == [ClientEOF()]


def test_client_eof_mid_body_is_an_error_or_eof() -> None:
    conn = H1Connection()
    conn.feed(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    conn.next_events()
    conn.feed(b"")
    events = conn.next_events()
    assert len(events) == 1
    assert isinstance(events[0], (BadRequest, ClientEOF))


def test_http10_request_closes_after_the_response() -> None:
    conn = H1Connection()
    conn.feed(b"GET / HTTP/1.0\r\n\r\n")
    events = conn.next_events()
    assert isinstance(events[0], RequestHead) and events[0].http_version == b"1.0"
    out = respond(conn, b"hi")
    response, body, _ = parse_response(out)
    assert body == b"hi"
    assert (b"connection", b"close") in list(response.headers)
    assert not conn.keep_alive
    assert conn.start_next_cycle() is False


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"THIS IS NOT HTTP\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: v\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 requires Host
    ],
)
def test_malformed_request_is_400(data: bytes) -> None:
    conn = H1Connection()
    conn.feed(data)
    events = conn.next_events()
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, BadRequest) and event.status == 400


def test_incomplete_oversized_head_is_431() -> None:
    conn = H1Connection(max_incomplete_event_size=16 * 1024)
    conn.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
    events = conn.next_events()
    assert [type(e) for e in events] == [BadRequest]
    assert events[0].status == 431  # type: ignore[attr-defined]


def test_complete_oversized_head_in_one_feed_is_431() -> None:
    """A 100 KB header must be refused even when the whole head arrives in one read."""
    conn = H1Connection(max_incomplete_event_size=16 * 1024)
    conn.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    events = conn.next_events()
    assert [type(e) for e in events] == [BadRequest]
    assert events[0].status == 431  # type: ignore[attr-defined]


def test_too_many_header_fields_is_431() -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(5))
    conn = H1Connection(max_fields=5)
    conn.feed(b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    events = conn.next_events()
    assert len(events) == 1 and isinstance(events[0], BadRequest)
    assert events[0].status == 431
    ok = H1Connection(max_fields=6)
    ok.feed(b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert isinstance(ok.next_events()[0], RequestHead)


def test_content_length_over_limit_is_413_from_the_head() -> None:
    conn = H1Connection(max_body_size=1000)
    conn.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
    events = conn.next_events()
    assert len(events) == 1 and isinstance(events[0], BadRequest)
    assert events[0].status == 413


def test_body_at_the_limit_is_accepted() -> None:
    conn = H1Connection(max_body_size=1000)
    conn.feed(post(b"x" * 1000))
    events = conn.next_events()
    assert body_of(events) == b"x" * 1000
    assert events[-1] == RequestEnd()


def test_chunked_body_over_limit_is_413() -> None:
    conn = H1Connection(max_body_size=1000)
    conn.feed(chunked_post(b"a" * 600))
    first = conn.next_events()
    assert body_of(first) == b"a" * 600
    conn2 = H1Connection(max_body_size=1000)
    conn2.feed(chunked_post(b"a" * 600, b"b" * 600))
    events = conn2.next_events()
    assert isinstance(events[-1], BadRequest) and events[-1].status == 413
    assert RequestEnd() not in events


def test_body_limit_applies_per_request() -> None:
    conn = H1Connection(max_body_size=1000)
    conn.feed(post(b"x" * 800) + post(b"y" * 800))
    assert body_of(conn.next_events()) == b"x" * 800
    respond(conn)
    assert conn.start_next_cycle()
    events = conn.next_events()
    assert body_of(events) == b"y" * 800
    assert events[-1] == RequestEnd()


@pytest.mark.parametrize("status", [400, 408, 413, 431, 503])
def test_error_response_is_complete_and_closes(status: int) -> None:
    conn = H1Connection()
    out = conn.error_response(status, [(b"retry-after", b"1")])
    response, body, leftover = parse_response(out)
    assert response.status_code == status
    headers = dict(response.headers)
    assert headers[b"connection"] == b"close"
    assert headers[b"retry-after"] == b"1"
    assert int(headers[b"content-length"]) == len(body) > 0
    assert leftover == b""


def test_error_response_after_a_protocol_error() -> None:
    conn = H1Connection()
    conn.feed(b"garbage\r\n\r\n")
    assert isinstance(conn.next_events()[0], BadRequest)
    response, body, _ = parse_response(conn.error_response(400))
    assert response.status_code == 400
    assert body == b"Bad Request\n"


def test_one_reason_phrase_for_the_servers_answers_and_the_apps() -> None:
    """RFC 9110's name whichever Python runs (3.11 still says "Request Entity Too Large")."""
    refused, _, _ = parse_response(H1Connection().error_response(413))
    app = H1Connection()
    app.feed(GET)
    app.next_events()
    answered, _, _ = parse_response(app.response_head(413, [(b"content-length", b"0")]))
    assert refused.reason == answered.reason == b"Content Too Large"


# --- responses out ----------------------------------------------------------------------------


def test_response_with_content_length() -> None:
    conn = H1Connection()
    conn.feed(GET)
    conn.next_events()
    out = conn.response_head(201, [(b"content-length", b"5"), (b"x-a", b"1")])
    out += conn.body(b"hello") + conn.end()
    response, body, _ = parse_response(out)
    assert response.status_code == 201
    assert response.reason == b"Created"
    assert body == b"hello"
    assert (b"x-a", b"1") in list(response.headers)


def test_response_started_only_once_the_head_is_produced() -> None:
    conn = H1Connection()
    assert not conn.response_started
    conn.feed(GET)
    conn.next_events()
    assert not conn.response_started, "a request was received, but nothing was sent yet"
    conn.response_head(200, [(b"content-length", b"0")])
    assert conn.response_started


def test_response_without_length_is_chunked() -> None:
    conn = H1Connection()
    conn.feed(GET)
    conn.next_events()
    out = conn.response_head(200, []) + conn.body(b"part1") + conn.body(b"") + conn.body(
        b"part2") + conn.end()
    response, body, _ = parse_response(out)
    assert (b"transfer-encoding", b"chunked") in list(response.headers)
    assert body == b"part1part2"
    assert conn.keep_alive


def test_head_response_carries_no_body() -> None:
    conn = H1Connection()
    conn.feed(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
    conn.next_events()
    out = conn.response_head(200, [(b"content-length", b"5")]) + conn.end()
    response, body, leftover = parse_response(out, method="HEAD")
    assert dict(response.headers)[b"content-length"] == b"5"
    assert body == b"" and leftover == b""
    assert conn.start_next_cycle()
    assert isinstance(conn.next_events()[0], RequestHead)


def test_invalid_response_header_raises() -> None:
    conn = H1Connection()
    conn.feed(GET)
    conn.next_events()
    with pytest.raises(h11.LocalProtocolError):
        conn.response_head(200, [(b"bad header", b"v")])
