"""ASGI ``http`` scope construction, request-target splitting and proxy-header handling."""

from __future__ import annotations

from typing import Any

import pytest

from devserve.asgi.scope import TrustedProxies, apply_proxy_headers, http_scope, split_target


def make_scope(target: bytes = b"/", *, headers: list[tuple[bytes, bytes]] | None = None,
               root_path: str = "", state: dict[str, Any] | None = None,
               client: tuple[str, int] | None = ("127.0.0.1", 50000),
               method: bytes = b"GET", scheme: str = "http") -> dict[str, Any]:
    return http_scope(
        method=method,
        target=target,
        http_version="1.1",
        headers=headers or [(b"host", b"example.com")],
        scheme=scheme,
        server=("127.0.0.1", 8000),
        client=client,
        root_path=root_path,
        state=state,
    )


# --- split_target -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/", (b"/", b"")),
        (b"/a/b?x=1&y=2", (b"/a/b", b"x=1&y=2")),
        (b"/a?", (b"/a", b"")),
        (b"/a?x=1?y", (b"/a", b"x=1?y")),
        (b"/caf%C3%A9?q=%20", (b"/caf%C3%A9", b"q=%20")),
        (b"http://example.com/p/q?z=9", (b"/p/q", b"z=9")),
        (b"https://example.com", (b"/", b"")),
        (b"http://example.com:8080/", (b"/", b"")),
        (b"*", (b"*", b"")),
    ],
)
def test_split_target(target: bytes, expected: tuple[bytes, bytes]) -> None:
    assert split_target(target) == expected


# --- http_scope -------------------------------------------------------------------------------


def test_http_scope_fields() -> None:
    headers = [(b"host", b"example.com"), (b"x-a", b"1")]
    scope = make_scope(b"/items/42?q=hi", headers=headers)
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/items/42"
    assert scope["raw_path"] == b"/items/42"
    assert scope["query_string"] == b"q=hi"
    assert scope["root_path"] == ""
    assert scope["headers"] == headers
    assert scope["server"] == ("127.0.0.1", 8000)
    assert scope["client"] == ("127.0.0.1", 50000)
    assert "state" not in scope


def test_path_is_percent_decoded_but_raw_path_is_not() -> None:
    scope = make_scope(b"/caf%C3%A9/a%2Fb%20c?x=%41")
    assert scope["path"] == "/café/a/b c"
    assert scope["raw_path"] == b"/caf%C3%A9/a%2Fb%20c"
    assert scope["query_string"] == b"x=%41"


def test_root_path_prefixes_path() -> None:
    scope = make_scope(b"/users?id=1", root_path="/api")
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/users"
    assert scope["raw_path"] == b"/api/users"
    assert scope["query_string"] == b"id=1"


def test_absolute_form_target() -> None:
    scope = make_scope(b"http://example.com/x/y?z=1")
    assert scope["path"] == "/x/y"
    assert scope["query_string"] == b"z=1"


def test_state_is_a_shallow_copy_per_request() -> None:
    shared = {"db": object(), "count": 1}
    first = make_scope(state=shared)
    assert first["state"] == shared
    assert first["state"] is not shared
    first["state"]["count"] = 99
    first["state"]["new"] = True
    assert shared == {"db": shared["db"], "count": 1}
    second = make_scope(state=shared)
    assert second["state"]["count"] == 1
    assert second["state"]["db"] is shared["db"]  # shallow: the objects themselves are shared


def test_empty_state_is_still_present() -> None:
    assert make_scope(state={})["state"] == {}


def test_method_and_scheme_pass_through() -> None:
    scope = make_scope(method=b"PATCH", scheme="https")
    assert scope["method"] == "PATCH"
    assert scope["scheme"] == "https"


# --- TrustedProxies ---------------------------------------------------------------------------


def test_trusted_addresses_and_networks() -> None:
    trusted = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"])
    assert "127.0.0.1" in trusted
    assert "10.20.30.40" in trusted
    assert "::1" in trusted
    assert "fd12::5" in trusted
    assert "127.0.0.2" not in trusted
    assert "11.0.0.1" not in trusted
    assert "2001:db8::1" not in trusted
    assert "not-an-ip" not in trusted
    assert None not in trusted  # a unix-socket peer is not trusted without 'unix:'


def test_trust_everyone() -> None:
    trusted = TrustedProxies(["*"])
    assert "203.0.113.9" in trusted
    assert "::1" in trusted
    assert None in trusted


def test_trust_unix_socket_peers() -> None:
    trusted = TrustedProxies(["unix:"])
    assert None in trusted
    assert "127.0.0.1" not in trusted


def test_entries_are_stripped_and_blank_entries_ignored() -> None:
    trusted = TrustedProxies([" 192.168.1.1 ", ""])
    assert "192.168.1.1" in trusted
    assert "192.168.1.2" not in trusted


def test_forwarded_for_picks_first_untrusted_from_the_right() -> None:
    trusted = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    assert trusted.client_from_forwarded_for("203.0.113.7") == "203.0.113.7"
    assert trusted.client_from_forwarded_for("198.51.100.1, 203.0.113.7, 10.1.1.1") == (
        "203.0.113.7"
    )
    # A spoofed left-most entry does not win over the real client.
    assert trusted.client_from_forwarded_for("1.2.3.4,203.0.113.7") == "203.0.113.7"
    # Every hop trusted: the left-most is the best guess.
    assert trusted.client_from_forwarded_for("10.0.0.5, 127.0.0.1") == "10.0.0.5"
    assert trusted.client_from_forwarded_for(" , ") == ""


# --- apply_proxy_headers ----------------------------------------------------------------------


def forwarded(*pairs: tuple[bytes, bytes], client: tuple[str, int] | None = ("127.0.0.1", 5000)
              ) -> dict[str, Any]:
    return make_scope(headers=[(b"host", b"example.com"), *pairs], client=client)


def test_proxy_headers_from_trusted_peer() -> None:
    scope = forwarded((b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https"))
    apply_proxy_headers(scope, TrustedProxies(["127.0.0.1"]))
    assert scope["client"] == ("203.0.113.7", 0)
    assert scope["scheme"] == "https"


def test_proxy_headers_ignored_from_untrusted_peer() -> None:
    scope = forwarded((b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https"))
    apply_proxy_headers(scope, TrustedProxies(["10.0.0.1"]))
    assert scope["client"] == ("127.0.0.1", 5000)
    assert scope["scheme"] == "http"


def test_proxy_proto_is_case_insensitive_and_validated() -> None:
    upper = forwarded((b"x-forwarded-proto", b" HTTPS "))
    apply_proxy_headers(upper, TrustedProxies(["127.0.0.1"]))
    assert upper["scheme"] == "https"
    bogus = forwarded((b"x-forwarded-proto", b"gopher"))
    apply_proxy_headers(bogus, TrustedProxies(["127.0.0.1"]))
    assert bogus["scheme"] == "http"


def test_proxy_headers_for_websocket_scope() -> None:
    scope = forwarded((b"x-forwarded-proto", b"https"))
    scope["type"] = "websocket"
    scope["scheme"] = "ws"
    apply_proxy_headers(scope, TrustedProxies(["127.0.0.1"]))
    assert scope["scheme"] == "wss"


def test_only_forwarded_for_changes_only_client() -> None:
    scope = forwarded((b"x-forwarded-for", b"198.51.100.4"))
    apply_proxy_headers(scope, TrustedProxies(["127.0.0.1"]))
    assert scope["client"] == ("198.51.100.4", 0)
    assert scope["scheme"] == "http"


def test_unix_socket_peer_needs_unix_entry() -> None:
    header = (b"x-forwarded-for", b"203.0.113.7")
    untrusted = forwarded(header, client=None)
    apply_proxy_headers(untrusted, TrustedProxies(["127.0.0.1"]))
    assert untrusted["client"] is None
    trusted = forwarded(header, client=None)
    apply_proxy_headers(trusted, TrustedProxies(["unix:"]))
    assert trusted["client"] == ("203.0.113.7", 0)
