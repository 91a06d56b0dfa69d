"""HTTP/2 field rules as pure functions over header lists: which request heads RFC 9113 §8.1.1
calls malformed (RFC 8441's ``:protocol`` included), what a response and its trailers may carry,
and whether an HTTP/1.1 ``Upgrade: h2c`` may switch (RFC 7540 §3.2).

No h2 state lives here: the connection adapter (:mod:`devserve.protocols.http2`) applies these
rules to what h2 parsed, and the HTTP/1.1 driver asks :func:`h2c_upgrade_settings` before it
hands a connection to HTTP/2. Imports nothing of devserve.
"""

from __future__ import annotations

import base64
import binascii
import re

Headers = list[tuple[bytes, bytes]]

# RFC 9113 §8.2.2 connection-specific fields; `te` is allowed only as "trailers".
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
)
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})
_EXTENDED_PSEUDO = _REQUEST_PSEUDO | {b":protocol"}
_TOKEN_LOWER = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")


class MalformedRequest(ValueError):
    """A request head that RFC 9113 §8.1.1 calls malformed."""


def parse_request_headers(raw: Headers) -> tuple[bytes, bytes, Headers]:
    """(method, target, regular headers with ``host`` first) or :class:`MalformedRequest`."""
    method, target, headers, _ = parse_request_head(raw, connect_protocol=False)
    return method, target, headers


def parse_request_head(
    raw: Headers, *, connect_protocol: bool
) -> tuple[bytes, bytes, Headers, bytes | None]:
    """Like :func:`parse_request_headers`, plus ``:protocol`` of an extended CONNECT (RFC 8441
    §4), accepted only when *connect_protocol* (SETTINGS_ENABLE_CONNECT_PROTOCOL) was sent."""
    allowed = _EXTENDED_PSEUDO if connect_protocol else _REQUEST_PSEUDO
    pseudo: dict[bytes, bytes] = {}
    headers: Headers = []
    host: bytes | None = None
    for name, value in raw:
        if name[:1] == b":":
            if headers:
                raise MalformedRequest("pseudo-header after a regular field")
            if name not in allowed:
                raise MalformedRequest(f"unknown pseudo-header {name!r}")
            if name in pseudo:
                raise MalformedRequest(f"duplicate {name!r}")
            pseudo[name] = value
            continue
        if _TOKEN_LOWER.fullmatch(name) is None:
            raise MalformedRequest(f"invalid field name {name!r}")
        if name in _CONNECTION_SPECIFIC:
            raise MalformedRequest(f"connection-specific field {name!r}")
        if name == b"te" and value.lower() != b"trailers":
            raise MalformedRequest("te other than 'trailers'")
        if _BAD_VALUE.search(value) is not None:
            raise MalformedRequest(f"invalid value for {name!r}")
        if name == b"host":
            if host is not None:
                raise MalformedRequest("duplicate host")
            host = value
            continue
        headers.append((name, value))
    method = pseudo.get(b":method")
    if not method:
        raise MalformedRequest("missing :method")
    authority = pseudo.get(b":authority")
    if authority is not None and _BAD_VALUE.search(authority) is not None:
        raise MalformedRequest("invalid :authority")
    protocol = pseudo.get(b":protocol")
    if protocol is not None:
        if method != b"CONNECT" or authority is None or not protocol:
            raise MalformedRequest(":protocol needs CONNECT and :authority")
        if b":scheme" not in pseudo or b":path" not in pseudo:
            raise MalformedRequest("extended CONNECT needs :scheme and :path")
        target = pseudo[b":path"]
        if target[:1] != b"/" or _BAD_VALUE.search(target) is not None or b" " in target:
            raise MalformedRequest("invalid :path")
    elif method == b"CONNECT":
        if authority is None or b":scheme" in pseudo or b":path" in pseudo:
            raise MalformedRequest("CONNECT needs :authority and no :scheme/:path")
        target = authority
    else:
        target = pseudo.get(b":path", b"")
        if b":scheme" not in pseudo or not target:
            raise MalformedRequest("missing :scheme or :path")
        if target[:1] != b"/" and not (target == b"*" and method == b"OPTIONS"):
            raise MalformedRequest("invalid :path")
        if _BAD_VALUE.search(target) is not None or b" " in target:
            raise MalformedRequest("invalid :path")
    if authority is not None:
        if host is not None and host != authority:
            raise MalformedRequest("host differs from :authority")
        host = authority
    if host is not None:
        headers.insert(0, (b"host", host))
    return method, target, headers, protocol


def response_headers(status: int, headers: Headers) -> Headers:
    """``:status`` plus the app's fields minus what HTTP/2 forbids (connection-specific ones,
    pseudo-headers); raises ValueError for a value h2 would send but a client must reject."""
    out: Headers = [(b":status", b"%d" % status)]
    for name, value in headers:
        if name in _CONNECTION_SPECIFIC or name[:1] == b":" or (
            name == b"te" and value.lower() != b"trailers"
        ):
            continue
        if b"\r" in value or b"\n" in value or b"\0" in value:
            raise ValueError(f"invalid response header value for {name!r}")
        out.append((name, value))
    return out


def trailer_headers(headers: Headers) -> Headers:
    return [(n, v) for n, v in response_headers(200, headers)[1:] if n != b"content-length"]


def h2c_upgrade_settings(headers: Headers) -> bytes | None:
    """The padded ``HTTP2-Settings`` of an ``Upgrade: h2c`` request (RFC 7540 §3.2) that may be
    upgraded: exactly one valid settings field, named in ``Connection``, and no body (the
    upgrade is for body-less requests). None means: serve it as HTTP/1.1."""
    for name, _ in headers:  # the hot path: no upgrade header at all
        if name == b"upgrade":
            break
    else:
        return None
    settings: bytes | None = None
    upgrade = False
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"upgrade":
            upgrade = b"h2c" in {t.strip() for t in value.lower().split(b",")}
        elif name == b"http2-settings":
            if settings is not None:
                return None
            settings = value.strip()
        elif name == b"connection":
            tokens.update(t.strip() for t in value.lower().split(b","))
        elif name == b"transfer-encoding" or (
            name == b"content-length" and value.strip() != b"0"
        ):
            return None
    if not upgrade or settings is None or b"http2-settings" not in tokens:
        return None
    padded = settings + b"=" * (-len(settings) % 4)  # token68 may omit base64 padding
    try:
        raw = base64.urlsafe_b64decode(padded)
    except (binascii.Error, ValueError):
        return None
    return padded if len(raw) % 6 == 0 else None

