"""Build the ASGI ``http`` scope from a parsed request head; proxy headers handled here.

Pure functions so they are unit-tested with real bytes; the workers only call them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}

Address = tuple[str, int] | None


class TrustedProxies:
    """Which peers may set X-Forwarded-* headers (``--forwarded-allow-ips``)."""

    __slots__ = ("_all", "_cache", "_hosts", "_networks", "_unix")

    def __init__(self, entries: Sequence[str]) -> None:
        self._all = "*" in entries
        self._hosts: set[str] = set()
        self._unix = False
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._cache: dict[str, bool] = {}  # peers repeat: parse each address once
        for entry in entries:
            entry = entry.strip()
            if not entry or entry == "*":
                continue
            if entry.startswith("unix:"):
                self._unix = True
                continue
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._hosts.add(entry)

    def __contains__(self, host: str | None) -> bool:
        if self._all:
            return True
        if host is None:
            return self._unix
        cached = self._cache.get(host)
        if cached is None:
            cached = self._lookup(host)
            if len(self._cache) < 4096:
                self._cache[host] = cached
        return cached

    def _lookup(self, host: str) -> bool:
        if host in self._hosts:
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    def client_from_forwarded_for(self, value: str) -> str:
        """The first address from the right that is not itself a trusted proxy."""
        hops = [h.strip() for h in value.split(",") if h.strip()]
        for host in reversed(hops):
            if host not in self:
                return host
        return hops[0] if hops else ""


def socket_address(value: Any) -> tuple[str, int] | None:
    """An ASGI ``server``/``client`` pair from ``get_extra_info("sockname"/"peername")``; a
    Unix socket path keeps the tuple shape as ``(path, 0)``."""
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    if isinstance(value, str) and value:
        return (value, 0)
    return None


def apply_proxy_headers(
    scope: dict[str, Any], trusted: TrustedProxies
) -> None:
    """Rewrite ``client`` and ``scheme`` from X-Forwarded-* when the peer is trusted."""
    client = scope.get("client")
    host = client[0] if client else None
    if host not in trusted:
        return
    forwarded_for: str | None = None
    forwarded_proto: str | None = None
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            forwarded_for = value.decode("latin-1")
        elif name == b"x-forwarded-proto":
            forwarded_proto = value.decode("latin-1").strip().lower()
    if forwarded_proto:
        if scope["type"] == "websocket":
            scope["scheme"] = "wss" if forwarded_proto in ("https", "wss") else "ws"
        elif forwarded_proto in ("http", "https"):
            scope["scheme"] = forwarded_proto
    if forwarded_for:
        new_host = trusted.client_from_forwarded_for(forwarded_for)
        if new_host:
            scope["client"] = (new_host, 0)


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """(raw_path, query_string) from a request target; absolute-form is reduced to its path."""
    if not target.startswith(b"/"):
        if b"://" in target:
            rest = target.split(b"://", 1)[1]
            slash = rest.find(b"/")
            target = rest[slash:] if slash >= 0 else b"/"
        elif target == b"*":
            return b"*", b""
    raw_path, _, query = target.partition(b"?")
    return raw_path, query


def http_scope(
    *,
    method: bytes,
    target: bytes,
    http_version: str,
    headers: list[tuple[bytes, bytes]],
    scheme: str,
    server: Address,
    client: Address,
    root_path: str,
    state: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ASGI 3 ``http`` scope. ``path`` is percent-decoded and includes ``root_path``."""
    raw_path, query = split_target(target)
    decoded = raw_path.decode("ascii", "replace")
    path = unquote(decoded) if "%" in decoded else decoded
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": ASGI_VERSION,
        "http_version": http_version,
        "server": server,
        "client": client,
        "scheme": scheme,
        "method": method.decode("ascii"),
        "root_path": root_path,
        "path": root_path + path,
        "raw_path": root_path.encode("ascii") + raw_path if root_path else raw_path,
        "query_string": query,
        "headers": headers,
    }
    if state is not None:
        scope["state"] = dict(state)
    return scope
