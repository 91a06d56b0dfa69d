"""TLS against the real server: the ``--https`` development certificate, ALPN (h2/http/1.1) with
httpx, curl and h2load, failed handshakes, worker modes and reloads."""

from __future__ import annotations

import hashlib
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from apps.h2_client import RawH2Client
from conftest import ServerFactory, ServerProcess

APP = "h2_app:app"
CERT = "localhost-cert.pem"
KEY = "localhost-key.pem"


def serve_https(start_server: ServerFactory, cache: Path, *extra: str) -> ServerProcess:
    server = start_server(APP, "--https", "--no-access-log", "--workers", "1", *extra,
                          env={"DEVSERVE_CACHE_DIR": str(cache)})
    assert server.scheme == "https"
    return server


def client_context(cache: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cache / CERT))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


def fingerprint(path: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(path.read_text())
    return hashlib.sha256(der).hexdigest()


def test_https_creates_a_dev_certificate_once_and_serves_h2(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    cache = tmp_path / "fresh-cache"
    server = serve_https(start_server, cache)
    assert re.search(r"Created development certificate .*localhost-cert\.pem", server.output)
    assert "update-ca-certificates" in server.output
    cert, key = cache / CERT, cache / KEY
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = (fingerprint(cert), cert.stat().st_mtime_ns, key.stat().st_mtime_ns)
    url = f"https://localhost:{server.port}"
    with httpx.Client(http2=True, verify=client_context(cache)) as client:
        r = client.get(f"{url}/scope")
        assert r.http_version == "HTTP/2"
        assert r.json()["http_version"] == "2" and r.json()["scheme"] == "https"
    with httpx.Client(verify=client_context(cache)) as client:  # ALPN http/1.1, same port
        r = client.get(f"{url}/scope")
        assert r.http_version == "HTTP/1.1" and r.json()["scheme"] == "https"
    assert server.stop() == 0

    again = serve_https(start_server, cache)
    assert re.search(r"Using development certificate", again.output)
    assert (fingerprint(cert), cert.stat().st_mtime_ns, key.stat().st_mtime_ns) == first
    with httpx.Client(http2=True, verify=client_context(cache)) as client:
        assert client.get(f"https://127.0.0.1:{again.port}/").text == "hello"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_http2_over_tls_with_cacert(start_server: ServerFactory, tmp_path: Path) -> None:
    server = serve_https(start_server, tmp_path)
    for flag, version in (("--http2", "2"), ("--http1.1", "1.1")):
        out = subprocess.run(
            ["curl", "-sS", flag, "--cacert", str(tmp_path / CERT), "-w", " %{http_version}",
             f"https://localhost:{server.port}/"],
            capture_output=True, text=True, timeout=30, check=True).stdout
        assert out == f"hello {version}"


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load not installed")
def test_h2load_10k_requests_over_tls_no_failures(start_server: ServerFactory,
                                                   tmp_path: Path) -> None:
    server = serve_https(start_server, tmp_path)
    proc = subprocess.run(["h2load", "-n", "10000", "-c", "10", "-m", "10",
                           f"https://127.0.0.1:{server.port}/"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert "Application protocol: h2" in proc.stdout
    assert "10000 succeeded, 0 failed, 0 errored" in proc.stdout, proc.stdout


def test_failed_handshakes_never_affect_other_connections(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = serve_https(start_server, tmp_path)
    ctx = client_context(tmp_path)
    errors: list[str] = []
    done = threading.Event()

    def steady_client() -> None:
        with httpx.Client(http2=True, verify=ctx) as client:
            while not done.is_set():
                try:
                    if client.get(f"https://localhost:{server.port}/").text != "hello":
                        errors.append("bad body")
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))

    thread = threading.Thread(target=steady_client)
    thread.start()
    stalled: list[socket.socket] = []
    try:
        # Clients that stall mid-handshake: a TCP connect, a few bytes of a ClientHello.
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(b"\x16\x03\x01\x02\x00\x01")
            stalled.append(sock)
        # Plain HTTP to the TLS port: the handshake fails and that connection is closed.
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                data = b""
                try:
                    while chunk := sock.recv(4096):
                        data += chunk
                except (ConnectionResetError, TimeoutError):
                    pass
                assert b"hello" not in data
        # A fresh TLS client is served normally while all of that is going on.
        with httpx.Client(http2=True, verify=ctx) as client:
            r = client.get(f"https://localhost:{server.port}/scope")
            assert r.http_version == "HTTP/2"
    finally:
        done.set()
        thread.join(30)
        for sock in stalled:
            sock.close()
    assert not errors, errors[:5]
    assert server.proc.poll() is None


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_tls_h2_in_both_worker_modes_and_across_a_reload(
    start_server: ServerFactory, tmp_path: Path, mode: str
) -> None:
    server = serve_https(start_server, tmp_path, "--worker-mode", mode)
    client = RawH2Client("127.0.0.1", server.port, tls=client_context(tmp_path))
    try:
        assert client.sock.selected_alpn_protocol() == "h2"  # type: ignore[attr-defined]
        assert client.get("/").status == 200
        tag = f"tls-{mode}"
        slow = client.request(f"/sleep?s=1&announce={tag}")
        server.wait_for(rf"h2_app: sleep {tag} started", 10)  # the request is in the app
        mark = len(server.lines)
        server.send_signal(signal.SIGHUP)
        client.wait(lambda: client.responses[slow].done, timeout=15)
        assert client.goaways and client.responses[slow].status == 200
        server.wait_for(r"Reloaded: generation 2", 30, start=mark)
    finally:
        client.close()
    with httpx.Client(http2=True, verify=client_context(tmp_path)) as fresh:
        r = fresh.get(f"https://localhost:{server.port}/scope")
        assert r.http_version == "HTTP/2" and r.json()["scheme"] == "https"


def test_no_http2_over_tls_negotiates_http11(start_server: ServerFactory,
                                             tmp_path: Path) -> None:
    server = serve_https(start_server, tmp_path, "--no-http2")
    with httpx.Client(http2=True, verify=client_context(tmp_path)) as client:
        r = client.get(f"https://localhost:{server.port}/scope")
        assert r.http_version == "HTTP/1.1" and r.json()["http_version"] == "1.1"
