"""HTTP/2 against the real server: httpx, curl, h2load and a raw h2 client over real sockets.

Cleartext here (h2c prior knowledge and ``Upgrade: h2c``); TLS/ALPN is in ``test_tls.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid

import h2.errors
import h2.settings
import httpx
import pytest
from apps.h2_client import RawH2Client
from conftest import ServerFactory, ServerProcess, wait_until

APP = "h2_app:app"
MODES = ["thread", "process"]


def serve(start_server: ServerFactory, *extra: str) -> ServerProcess:
    return start_server(APP, "--no-access-log", "--workers", "1", *extra)


def h2c(server: ServerProcess, timeout: float = 10.0) -> httpx.Client:
    """httpx speaking HTTP/2 with prior knowledge (no TLS, no upgrade)."""
    return httpx.Client(base_url=server.url, http1=False, http2=True, timeout=timeout)


def h2load(url: str, *args: str) -> dict[str, int]:
    proc = subprocess.run(["h2load", *args, url], capture_output=True, text=True, timeout=120,
                          check=False)
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", proc.stdout)
    assert m, proc.stdout + proc.stderr
    keys = ("total", "started", "done", "succeeded", "failed", "errored")
    return dict(zip(keys, map(int, m.groups()), strict=True))


needs_h2load = pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load not installed")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


# -- real clients ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_httpx_prior_knowledge_and_scope(start_server: ServerFactory, mode: str) -> None:
    server = serve(start_server, "--worker-mode", mode)
    with h2c(server) as client:
        r = client.get("/scope")
        assert r.http_version == "HTTP/2"
        scope = r.json()
        assert scope["http_version"] == "2" and scope["scheme"] == "http"
        assert scope["extensions"] == {"http.response.trailers": {}}
        assert ["host", f"{server.host}:{server.port}"] == scope["headers"][0]
        body = bytes(range(256)) * 1000
        r = client.post("/echo", content=body)
        assert r.http_version == "HTTP/2" and r.content == body
    with httpx.Client(base_url=server.url) as plain:  # HTTP/1.1 on the same port
        r = plain.get("/scope")
        assert r.http_version == "HTTP/1.1" and r.json()["http_version"] == "1.1"


@needs_curl
def test_curl_prior_knowledge_and_h2c_upgrade(start_server: ServerFactory) -> None:
    server = serve(start_server)
    for flag in ("--http2-prior-knowledge", "--http2"):
        out = subprocess.run(
            ["curl", "-sS", flag, "-w", "\n%{http_version}", f"{server.url}/scope"],
            capture_output=True, text=True, timeout=30, check=True).stdout
        body, version = out.rsplit("\n", 1)
        assert version == "2", out
        assert json.loads(body)["http_version"] == "2"
    # Upgrade with a body is served over HTTP/1.1 (h2c upgrade is for body-less requests).
    out = subprocess.run(
        ["curl", "-sS", "--http2", "-d", "payload", "-w", "\n%{http_version}",
         f"{server.url}/echo"], capture_output=True, text=True, timeout=30, check=True).stdout
    assert out == "payload\n1.1"


@needs_h2load
def test_h2load_10k_requests_h2c_no_failures(start_server: ServerFactory) -> None:
    server = serve(start_server)
    result = h2load(f"{server.url}/", "-n", "10000", "-c", "10", "-m", "10")
    assert result["succeeded"] == 10000 and result["failed"] == 0 and result["errored"] == 0


# -- raw h2 client -----------------------------------------------------------------------------
def test_more_than_100_concurrent_streams(start_server: ServerFactory) -> None:
    server = serve(start_server, "--h2-max-concurrent-streams", "150")
    client = RawH2Client(server.host, server.port)
    try:
        client.wait(lambda: bool(client.server_settings))
        assert client.server_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 150
        started = time.monotonic()
        sids = [client.request("/sleep?s=0.5") for _ in range(120)]
        client.wait(lambda: all(client.responses[s].done for s in sids), timeout=20)
        elapsed = time.monotonic() - started
        assert all(client.responses[s].status == 200 for s in sids)
        assert all(bytes(client.responses[s].body) == b"slept" for s in sids)
        assert elapsed < 5.0, f"120 x 0.5 s streams were not concurrent: {elapsed:.1f} s"
    finally:
        client.close()


def test_large_upload_to_a_slow_app_is_flow_controlled(start_server: ServerFactory) -> None:
    """20 MB to an app that waits before reading: the client is blocked by flow control (its
    window stays 0) instead of the server buffering, and the server's RSS stays flat."""
    server = serve(start_server)
    body = hashlib.sha256(b"seed").digest() * (20 * 1024 * 1024 // 32)
    client = RawH2Client(server.host, server.port)
    try:
        client.wait(lambda: bool(client.server_settings))
        sid = client.request("/hold-upload?hold=2", "POST", end=False)
        sent = client.send_body(sid, body, end=False)
        # While the app holds, the server grants nothing more: the client is stuck.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            client.read_once(0.1)
            sent += client.send_body(sid, body[sent:], end=False)
        assert client.conn.local_flow_control_window(sid) == 0
        assert sent <= 256 * 1024, f"{sent} bytes accepted by a server whose app reads nothing"
        # Once the app reads, the rest flows as fast as the app consumes it.
        while sent < len(body):
            client.read_once(0.05)
            sent += client.send_body(sid, body[sent:], end=sent >= len(body))
        client.conn.end_stream(sid)
        client.flush()
        client.wait(lambda: client.responses[sid].done, timeout=60)
        result = json.loads(bytes(client.responses[sid].body))
        assert result["size"] == len(body)
        assert result["sha256"] == hashlib.sha256(body).hexdigest()
        growth_mb = (result["rss_after_kb"] - result["rss_before_kb"]) / 1024
        assert growth_mb < 10, f"server RSS grew {growth_mb:.1f} MB for a 20 MB upload"
    finally:
        client.close()


def test_rapid_reset_flood_gets_goaway_and_others_keep_being_served(
    start_server: ServerFactory,
) -> None:
    server = serve(start_server)
    with h2c(server) as other:
        assert other.get("/").text == "hello"
        attacker = RawH2Client(server.host, server.port, settings={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535})
        try:
            for _ in range(1000):
                sid = attacker.conn.get_next_available_stream_id()
                attacker.conn.send_headers(sid, attacker.headers("/sleep?s=5"), end_stream=True)
                attacker.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            try:
                attacker.flush()
            except OSError:
                pass  # the server may already have closed
            attacker.wait_closed()
            assert attacker.goaways, "no GOAWAY before the close"
            assert attacker.goaways[-1].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        finally:
            attacker.close()
        # The same client connection and new ones still work.
        assert other.get("/").text == "hello"
    with h2c(server) as fresh:
        assert fresh.get("/scope").json()["http_version"] == "2"


@pytest.mark.parametrize("headers", [
    [(b"X-Upper", b"1")],
    [(b"connection", b"keep-alive")],
    "no-path",
], ids=["uppercase-name", "connection-header", "missing-path"])
def test_malformed_headers_reset_the_stream_not_the_connection(
    start_server: ServerFactory, headers: object
) -> None:
    server = serve(start_server)
    client = RawH2Client(server.host, server.port, validate=False)
    try:
        base = client.headers("/")
        bad = base[:3] if headers == "no-path" else [*base, *headers]  # type: ignore[misc]
        sid = client.request(headers=bad)
        client.wait(lambda: client.responses[sid].done)
        assert client.responses[sid].reset == h2.errors.ErrorCodes.PROTOCOL_ERROR
        good = client.get("/")
        assert good.status == 200 and bytes(good.body) == b"hello"
        assert not client.goaways
    finally:
        client.close()


def test_trailers_reach_the_client(start_server: ServerFactory) -> None:
    server = serve(start_server)
    client = RawH2Client(server.host, server.port)
    try:
        response = client.get("/trailers")
        assert response.status == 200 and bytes(response.body) == b"data"
        assert response.trailers == [(b"x-checksum", b"abc"), (b"x-count", b"1")]
    finally:
        client.close()


def test_client_reset_gives_the_app_http_disconnect(start_server: ServerFactory) -> None:
    server = serve(start_server)
    key = uuid.uuid4().hex
    client = RawH2Client(server.host, server.port)
    try:
        sid = client.request(f"/wait-disconnect?key={key}")
        with h2c(server) as probe:
            def recorded(state: str) -> bool:
                return bool(probe.get(f"/disconnects?key={key}").json()["state"] == state)

            wait_until(lambda: recorded("waiting"), 10, "the app waiting", interval=0.05)
            client.reset(sid)
            wait_until(lambda: recorded("http.disconnect"), 10, "the app seeing http.disconnect",
                       interval=0.05)
        assert client.get("/").status == 200  # the connection itself is fine
    finally:
        client.close()


def test_idle_connection_is_closed_after_keep_alive_with_goaway(
    start_server: ServerFactory,
) -> None:
    server = serve(start_server, "--timeout-keep-alive", "1")
    client = RawH2Client(server.host, server.port)
    try:
        assert client.get("/").status == 200
        started = time.monotonic()
        client.wait_closed(timeout=5)
        assert 0.5 < time.monotonic() - started < 3
        assert client.goaways and client.goaways[-1].error_code == 0
    finally:
        client.close()


# -- reloads -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_goaway_on_reload_lets_the_in_flight_stream_finish(
    start_server: ServerFactory, mode: str
) -> None:
    server = serve(start_server, "--worker-mode", mode, "--reload-grace", "10")
    client = RawH2Client(server.host, server.port)
    try:
        assert client.get("/").status == 200
        tag = f"goaway-{mode}"
        slow = client.request(f"/sleep?s=1.5&announce={tag}")
        server.wait_for(rf"h2_app: sleep {tag} started", 10)  # the request is in the app
        mark = len(server.lines)
        server.send_signal(signal.SIGHUP)
        client.wait(lambda: bool(client.goaways), timeout=15)
        assert client.goaways[0].error_code == 0
        assert client.goaways[0].last_stream_id >= slow
        client.wait(lambda: client.responses[slow].done, timeout=15)
        assert client.responses[slow].status == 200
        assert bytes(client.responses[slow].body) == b"slept"
        client.wait_closed(timeout=15)  # drained: the old generation closes the connection
        assert client.goaways[-1].last_stream_id == slow
        server.wait_for(r"Reloaded: generation 2", 30, start=mark)
        with h2c(server) as fresh:  # the new generation speaks HTTP/2 too
            assert fresh.get("/scope").json()["http_version"] == "2"
    finally:
        client.close()


def test_endless_stream_is_ended_cleanly_when_the_reload_grace_runs_out(
    start_server: ServerFactory,
) -> None:
    """A long-lived stream never blocks a reload: after the grace it ends with END_STREAM
    (not a reset, the response has no declared length) and the connection gets GOAWAY."""
    server = serve(start_server, "--worker-mode", "thread", "--reload-grace", "1")
    client = RawH2Client(server.host, server.port)
    try:
        sid = client.request("/stream-forever")
        client.wait(lambda: len(client.responses[sid].body) > 20)
        mark = len(server.lines)
        sent = time.monotonic()
        server.send_signal(signal.SIGHUP)
        client.wait(lambda: client.responses[sid].done, timeout=15)
        assert time.monotonic() - sent < 8
        response = client.responses[sid]
        assert response.ended and response.reset is None and response.status == 200
        assert bytes(response.body).startswith(b"tick\n")
        assert client.goaways
        server.wait_for(r"Reloaded: generation 2", 30, start=mark)
    finally:
        client.close()


@pytest.mark.parametrize("mode", MODES)
def test_no_stream_is_lost_across_repeated_reloads(start_server: ServerFactory, mode: str) -> None:
    """A client that follows GOAWAY as RFC 9113 says (finish streams <= last_stream_id, then
    reconnect) loses nothing while the server reloads twice. (h2load does not reconnect after
    a GOAWAY and httpcore fails in-flight requests on one, encode/httpcore#730, so a raw
    client plays the well-behaved one.)"""
    server = serve(start_server, "--worker-mode", mode)
    stop = threading.Event()
    stats = {"ok": 0, "connections": 0, "batches": 0}
    failures: list[str] = []

    def load() -> None:
        while not stop.is_set():
            client = RawH2Client(server.host, server.port)
            stats["connections"] += 1
            try:
                while not stop.is_set() and not client.goaways and not client.closed:
                    batch = [client.responses[client.request("/")] for _ in range(4)]
                    client.wait(lambda b=batch: all(r.done for r in b), 10)  # type: ignore[misc]
                    stats["batches"] += 1
                # Drained or closed: whatever was started must have completed.
                for sid, response in client.responses.items():
                    if not response.done:
                        client.wait(lambda r=response: r.done, 10)
                    if response.status != 200 or response.reset is not None:
                        failures.append(f"stream {sid}: {response.status} reset={response.reset}")
                    else:
                        stats["ok"] += 1
            except AssertionError as exc:
                failures.append(repr(exc))
            finally:
                client.close()

    def load_running(batches: int = 10) -> None:
        """The client has completed *batches* more batches (the load runs across each step)."""
        target = stats["batches"] + batches
        wait_until(lambda: stats["batches"] >= target or failures, 10, f"{batches} more batches",
                   detail=lambda: f"{stats} {failures[:5]}")

    thread = threading.Thread(target=load)
    thread.start()
    try:
        for generation in (2, 3):
            load_running()
            mark = len(server.lines)
            server.send_signal(signal.SIGHUP)
            server.wait_for(rf"Reloaded: generation {generation}", 30, start=mark)
        load_running()
    finally:
        stop.set()
        thread.join(30)
    assert not failures, failures[:5]
    assert stats["connections"] >= 3, stats  # each reload moved the client to a new connection
    assert stats["ok"] > 20, stats


def test_preface_split_across_reads_and_a_stalled_one(start_server: ServerFactory) -> None:
    server = serve(start_server, "--timeout-keep-alive", "1")
    stalled = socket.create_connection((server.host, server.port))
    split: RawH2Client | None = None
    try:
        stalled.sendall(b"PRI * HTTP/2.0\r\n")  # a prefix of the preface, then nothing
        with h2c(server) as client:
            assert client.get("/").text == "hello"
        # The preface in three pieces still selects HTTP/2.
        split = RawH2Client(server.host, server.port, split_preface=(10, 20))
        response = split.get("/scope")
        assert response.status == 200 and b'"http_version": "2"' in bytes(response.body)
        stalled.settimeout(5)
        assert stalled.recv(100) == b""  # closed by the idle timeout
    finally:
        stalled.close()
        if split is not None:
            split.close()


def test_no_http2_serves_only_http11(start_server: ServerFactory) -> None:
    server = serve(start_server, "--no-http2")
    out = subprocess.run(["curl", "-sS", "--http2", "-w", " %{http_version}",
                          f"{server.url}/"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    assert out == "hello 1.1"  # the Upgrade: h2c offer is ignored
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 4")  # not HTTP/2: a 4xx from h11
