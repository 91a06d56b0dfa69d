"""Slow and abusive clients: 1,000 connections trickling request-head bytes (slowloris) do not
stop the server from answering other clients promptly; each gets 408 at the header timeout and
is closed; the server's memory stays bounded. Counts and time are bounded."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory, descendants, wait_until

SLOW_CLIENTS = 1000
HEADER_TIMEOUT = 3.0


def _rss_kib(pid: int) -> int:
    """RSS of *pid* and its descendants (process workers), in KiB."""
    total = 0
    for proc in {pid} | descendants(pid):
        try:
            status = Path(f"/proc/{proc}/status").read_text()
        except FileNotFoundError:
            continue
        total += sum(int(line.split()[1]) for line in status.splitlines()
                     if line.startswith("VmRSS:"))
    return total


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_slowloris_does_not_starve_other_clients(start_server: ServerFactory, mode: str) -> None:
    server = start_server("echo_app:app", "--worker-mode", mode, "--no-access-log",
                          "--timeout-request-header", str(HEADER_TIMEOUT))
    rss_before = _rss_kib(server.proc.pid)
    slow: list[socket.socket] = []
    try:
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection((server.host, server.port), timeout=10)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and then a byte at a time
            slow.append(sock)
        started = time.monotonic()
        latencies = []
        with httpx.Client(base_url=server.url, timeout=5.0) as client:
            for i in range(20):
                for sock in slow[i::20]:
                    try:
                        sock.send(b"a")
                    except OSError:
                        pass
                t0 = time.monotonic()
                assert client.get("/").status_code == 200
                latencies.append(time.monotonic() - t0)
        latencies.sort()
        assert latencies[len(latencies) // 2] < 0.25, latencies  # p50 of the other client
        assert time.monotonic() - started < HEADER_TIMEOUT, "the slow clients were not all open"

        # Each slow client gets 408 and a close once its head is late.
        answered = 0
        deadline = time.monotonic() + HEADER_TIMEOUT + 15
        for sock in slow:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            data = b""
            try:
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except (TimeoutError, ConnectionResetError):
                pass
            if data.startswith(b"HTTP/1.1 408"):
                answered += 1
        assert answered == SLOW_CLIENTS, f"{answered} of {SLOW_CLIENTS} got 408"
    finally:
        for sock in slow:
            sock.close()
    wait_until(lambda: _rss_kib(server.proc.pid) - rss_before < 64 * 1024, 10,
               "the server's memory back within 64 MiB of where it started")
    assert httpx.get(server.url, timeout=5).status_code == 200
