"""The answers the server gives by itself (503, 413, 500, the health endpoint), in one place.

A :class:`Canned` response is status + plain-text body + the headers that belong to it
(``Retry-After`` on a 503). ``Connection: close`` is not part of it: only HTTP/1.1 has that
header, and the driver adds it when it closes (HTTP/2 and HTTP/3 forbid it). The asyncio
drivers run a canned response through an ``HTTPCycle`` like any app (:meth:`Canned.asgi`), so
default headers, the access log and ``RequestCompleted`` apply unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devserve.protocols.http1 import reason_phrase
from devserve.serve.admission import Verdict

Headers = list[tuple[bytes, bytes]]

_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_RETRY_AFTER = (b"retry-after", b"1")
CLOSE = (b"connection", b"close")


@dataclass(frozen=True, slots=True)
class Canned:
    status: int
    body: bytes

    def headers(self) -> Headers:
        headers = [_TEXT, (b"content-length", b"%d" % len(self.body))]
        if self.status == 503:
            headers.append(_RETRY_AFTER)  # a retry soon will reach a worker that serves
        return headers

    async def asgi(self, scope: Any, receive: Any, send: Any) -> None:
        """This response as an ASGI app."""
        await send({"type": "http.response.start", "status": self.status,
                    "headers": self.headers()})
        await send({"type": "http.response.body", "body": self.body})

    def http11(self) -> bytes:
        """The whole response as HTTP/1.1 bytes with ``Connection: close`` (for a socket
        that no parser owns, e.g. a connection refused at accept)."""
        lines = [b"HTTP/1.1 %d %s" % (self.status, reason_phrase(self.status))]
        lines += [name + b": " + value for name, value in [*self.headers(), CLOSE]]
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


HEALTHY = Canned(200, b"ok\n")
UNAVAILABLE = Canned(503, b"Service Unavailable\n")
TOO_LARGE = Canned(413, b"Request body too large\n")
INTERNAL_ERROR = Canned(500, b"Internal Server Error\n")

_BY_VERDICT = {
    Verdict.HEALTHY: HEALTHY,
    Verdict.UNHEALTHY: UNAVAILABLE,
    Verdict.BUSY: UNAVAILABLE,
    Verdict.TOO_LARGE: TOO_LARGE,
}


def for_verdict(verdict: Verdict) -> Canned:
    """The server's own answer for anything but :attr:`Verdict.APP`."""
    return _BY_VERDICT[verdict]
