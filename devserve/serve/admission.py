"""One admission decision for a request head, shared by every connection driver (HTTP/1.1,
HTTP/2, HTTP/3 and the blocking HTTP/1.1 path): run the user's app, or let the server answer.

The first rule that applies wins:

1. the ``--health-path`` endpoint: ``200`` while serving, ``503`` once the worker is
   *unhealthy* (the ``--shutdown-delay`` began, it drains for a reload, or it is stopping), so
   a load balancer moves on;
2. a declared body over ``--limit-request-body``: ``413`` without running the app;
3. over ``--limit-concurrency`` (open connections, or requests already running): ``503``;
4. otherwise the app — while stopping too: a request that reached a worker is answered, never
   turned away (new connections are refused at the listener instead, which a client or a
   balancer can safely retry elsewhere).

Why one function: four copies of these rules used to disagree (the sync path answered the
health endpoint 200 while draining and ignored ``--root-path``; HTTP/3 had no health endpoint
and no concurrency limit). It is pure — plain values in, a :class:`Verdict` out — so the rules
are unit-tested without a server; the canned answers themselves live in ``responses.py``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import unquote

from devserve.asgi.scope import split_target
from devserve.config import Config

Headers = list[tuple[bytes, bytes]]


class Verdict(enum.Enum):
    """What answers a request."""

    APP = "app"  # the user's app
    HEALTHY = "healthy"  # --health-path while serving: 200
    UNHEALTHY = "unhealthy"  # --health-path while draining or stopping: 503
    TOO_LARGE = "too_large"  # the declared body is over --limit-request-body: 413
    BUSY = "busy"  # over --limit-concurrency: 503

    @property
    def is_work(self) -> bool:
        """Whether a drain waits for it (a refusal is not work worth waiting for)."""
        return self is Verdict.APP or self is Verdict.HEALTHY

    @property
    def refused(self) -> bool:
        """Answered with an error the server makes up; HTTP/1.1 closes after it."""
        return not self.is_work


@dataclass(frozen=True, slots=True)
class Limits:
    """The config values admission reads, taken once per worker."""

    health_path: str | None = None
    limit_concurrency: int | None = None
    limit_request_body: int | None = None

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        return cls(health_path=config.health_path, limit_concurrency=config.limit_concurrency,
                   limit_request_body=config.limit_request_body)


def admit(limits: Limits, path: str, headers: Headers, *, unhealthy: bool = False,
          connections: int = 0, in_flight: int = 0) -> Verdict:
    """Decide who answers a request for *path* (the ASGI ``path``: ``--root-path`` included).

    *unhealthy*: the health endpoint says 503 (shutdown delay, drain, stop). *connections*
    counts open connections (this one included), *in_flight* the requests already running
    (this one not included).
    """
    if limits.health_path is not None and path == limits.health_path:
        return Verdict.UNHEALTHY if unhealthy else Verdict.HEALTHY
    body_limit = limits.limit_request_body
    if body_limit is not None:
        length = declared_length(headers)
        if length is not None and length > body_limit:
            return Verdict.TOO_LARGE
    limit = limits.limit_concurrency
    if limit is not None and (connections > limit or in_flight >= limit):
        return Verdict.BUSY
    return Verdict.APP


def body_over_limit(limits: Limits, received: int) -> bool:
    """A streamed body (no or a false ``content-length``) went over ``--limit-request-body``."""
    return limits.limit_request_body is not None and received > limits.limit_request_body


def declared_length(headers: Headers) -> int | None:
    """The request's ``content-length``, or None when absent or not a number."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def request_path(target: bytes, root_path: str) -> str:
    """The ASGI ``path`` of a request target (what HTTP/1.1's scope would say), for the
    blocking path, which has no scope for WSGI apps."""
    raw_path, _query = split_target(target)
    decoded = raw_path.decode("ascii", "replace")
    return root_path + (unquote(decoded) if "%" in decoded else decoded)
