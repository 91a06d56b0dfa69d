"""admission.admit(): the one decision every driver makes for a request head, on plain values;
responses: the canned answers that go with it."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import pytest

from devserve.serve.admission import (
    Limits,
    Verdict,
    admit,
    body_over_limit,
    declared_length,
    request_path,
)
from devserve.serve.responses import HEALTHY, TOO_LARGE, UNAVAILABLE, for_verdict

HEALTH = Limits(health_path="/healthz")


def test_without_limits_everything_goes_to_the_app() -> None:
    assert admit(Limits(), "/", []) is Verdict.APP
    assert admit(Limits(), "/healthz", [], unhealthy=True, connections=10**6,
                 in_flight=10**6) is Verdict.APP


def test_health_endpoint_is_200_while_serving_and_503_once_unhealthy() -> None:
    assert admit(HEALTH, "/healthz", []) is Verdict.HEALTHY
    assert admit(HEALTH, "/healthz", [], unhealthy=True) is Verdict.UNHEALTHY
    assert admit(HEALTH, "/healthz/", []) is Verdict.APP
    # A shutdown delay, a drain or a stop still serves every other request.
    assert admit(HEALTH, "/", [], unhealthy=True) is Verdict.APP


def test_limit_concurrency_counts_connections_and_requests_in_flight() -> None:
    limits = Limits(limit_concurrency=2)
    assert admit(limits, "/", [], connections=2, in_flight=1) is Verdict.APP
    assert admit(limits, "/", [], connections=3, in_flight=0) is Verdict.BUSY
    assert admit(limits, "/", [], connections=1, in_flight=2) is Verdict.BUSY
    # The health probe answers even when the app is saturated.
    assert admit(Limits(health_path="/h", limit_concurrency=1), "/h", [],
                 in_flight=5) is Verdict.HEALTHY


def test_declared_body_over_the_limit_is_413_before_the_app_runs() -> None:
    limits = Limits(limit_request_body=10)
    assert admit(limits, "/", [(b"content-length", b"10")]) is Verdict.APP
    assert admit(limits, "/", [(b"content-length", b"11")]) is Verdict.TOO_LARGE
    assert admit(limits, "/", [(b"content-length", b"x")]) is Verdict.APP  # the parser's job
    assert admit(limits, "/", []) is Verdict.APP  # streamed: see body_over_limit
    assert body_over_limit(limits, 11) and not body_over_limit(limits, 10)
    assert not body_over_limit(Limits(), 10**9)


def test_verdicts_that_are_work_for_a_drain() -> None:
    assert {v for v in Verdict if v.is_work} == {Verdict.APP, Verdict.HEALTHY}
    assert all(v.refused is not v.is_work for v in Verdict)


def test_request_path_is_the_asgi_path_with_the_root_path() -> None:
    assert request_path(b"/healthz?probe=1", "") == "/healthz"
    assert request_path(b"/healthz", "/api") == "/api/healthz"
    assert request_path(b"/a%20b", "") == "/a b"
    assert request_path(b"http://example.com/healthz", "") == "/healthz"
    assert declared_length([(b"host", b"x"), (b"content-length", b"42")]) == 42


def test_canned_responses_per_verdict() -> None:
    assert for_verdict(Verdict.HEALTHY) is HEALTHY
    for verdict in (Verdict.UNHEALTHY, Verdict.BUSY):
        assert for_verdict(verdict) is UNAVAILABLE
    assert for_verdict(Verdict.TOO_LARGE) is TOO_LARGE
    with pytest.raises(KeyError):
        for_verdict(Verdict.APP)
    assert (b"retry-after", b"1") in UNAVAILABLE.headers()
    assert all(name != b"connection" for name, _ in UNAVAILABLE.headers())  # HTTP/1.1's job
    assert (b"content-length", b"3") in HEALTHY.headers() and HEALTHY.body == b"ok\n"


def test_canned_http11_bytes_parse_as_a_closing_response() -> None:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(UNAVAILABLE.http11())
    response = client.next_event()
    assert isinstance(response, h11.Response)
    assert response.status_code == 503 and response.reason == b"Service Unavailable"
    headers = dict(response.headers)
    assert headers[b"connection"] == b"close" and headers[b"retry-after"] == b"1"
    data = client.next_event()
    assert isinstance(data, h11.Data) and data.data == UNAVAILABLE.body


def test_canned_asgi_app_sends_status_headers_and_body() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(TOO_LARGE.asgi({"type": "http"}, None, send))
    assert sent[0]["status"] == 413 and sent[0]["headers"] == TOO_LARGE.headers()
    assert sent[1] == {"type": "http.response.body", "body": b"Request body too large\n"}
