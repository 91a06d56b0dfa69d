"""Graceful shutdown of the real server (SIGTERM / SIGINT), in both worker modes.

Contract: in-flight requests finish; new requests get ``503`` + ``Retry-After`` +
``Connection: close`` while the drain lasts; ``--health-path`` reports 503 too; exit code 0.
A slow request (``/slow?s=..&marker=..``, which writes the marker file when it starts) holds
the drain open so the 503 window can be observed; every wait polls a real signal.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from apps.sup_load import KeepAliveLoad
from conftest import ServerFactory, ServerProcess, wait_until

MODES = ["thread", "process"]


def start(start_server: ServerFactory, mode: str, *extra: str) -> ServerProcess:
    return start_server("sup_app:app", "--workers", "2", "--worker-mode", mode,
                        "--no-access-log", *extra)


class SlowRequest:
    """``GET /slow?s=..`` in a thread; ``started()`` waits until the app is running it."""

    def __init__(self, server: ServerProcess, tmp_path: Path, seconds: float) -> None:
        self.marker = tmp_path / f"slow-{time.monotonic_ns()}"
        self.url = f"{server.url}/slow?s={seconds}&marker={self.marker}"
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.response = httpx.get(self.url, timeout=60)
        except BaseException as exc:
            self.error = exc

    def started(self, timeout: float = 10.0) -> None:
        def reached() -> bool:
            assert self.error is None, f"slow request failed: {self.error!r}"
            return self.marker.exists()

        wait_until(reached, timeout, "the slow request reaching the app")

    def result(self, timeout: float) -> httpx.Response:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the slow request did not finish"
        assert self.error is None, f"the in-flight request failed: {self.error!r}"
        assert self.response is not None
        return self.response


def poll_new_connections_until_503(url: str, timeout: float = 10.0) -> httpx.Response:
    """Fresh connection per request: before the workers switched to shutting down they may
    still answer 200; anything else than 200/503 fails."""
    seen: list[Any] = []

    def refused() -> httpx.Response | None:
        with httpx.Client(timeout=5) as client:
            r = client.get(url)
        seen.append(r.status_code)
        assert r.status_code in (200, 503), f"unexpected {r.status_code} during shutdown: {r.text}"
        return r if r.status_code == 503 else None

    response = wait_until(refused, timeout, "a 503 after the shutdown signal", interval=0,
                          detail=lambda: f"saw {seen[-5:]}")
    assert response is not None
    return response


@pytest.mark.parametrize("mode", MODES)
def test_sigterm_under_load_finishes_in_flight_answers_503_and_exits_0(
    start_server: ServerFactory, tmp_path: Path, mode: str
) -> None:
    server = start(start_server, mode)
    load = KeepAliveLoad(server.url, clients=20, max_seconds=60, stop_after_503=True)
    load.start()
    try:
        load.wait_for(lambda o: o.ok, 100, what="responses before the shutdown")
        slow = SlowRequest(server, tmp_path, 3)
        slow.started()
        index = len(server.lines)
        sent = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait_for(r"Shutting down \(SIGTERM\)", start=index)

        # While the slow request holds the drain open, a new connection gets a polite 503.
        r = poll_new_connections_until_503(server.url + "/")
        assert r.headers.get("retry-after"), dict(r.headers)
        assert r.headers.get("connection") == "close", dict(r.headers)
        assert time.monotonic() - sent < 3, "the 503 came only after the drain ended"
        assert server.proc.poll() is None, "the server exited while a request was in flight"

        # The in-flight request completes normally.
        done = slow.result(timeout=20)
        assert done.status_code == 200 and done.text == "slow v1"
        assert server.wait_exit(timeout=20) == 0, server.output
    finally:
        load.stop()
    outcomes = load.snapshot()
    bad = [o for o in outcomes if not (o.ok or (o.status == 503 and o.retry_after))]
    assert not bad, (
        f"{len(bad)} of {len(outcomes)} requests were neither answered nor refused politely: "
        + "; ".join(f"client {o.client} at +{o.started - sent:.3f}s: {o.status} {o.error}"
                    for o in bad[:5])
    )
    assert sum(o.status == 503 for o in outcomes) >= 1
    assert "Traceback" not in server.output, server.output


class RawConnection:
    """One keep-alive HTTP/1.1 connection on a plain socket (no client-side retry magic)."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.host = f"{server.host}:{server.port}"
        self._buffer = b""

    def send(self, path: str) -> None:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())

    def read(self) -> tuple[int, dict[str, str], bytes]:
        """One response; raises ConnectionError if the server closed without answering."""
        while b"\r\n\r\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by the server without a response "
                                      f"(buffered {self._buffer!r})")
            self._buffer += chunk
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self._buffer) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the middle of a response body")
            self._buffer += chunk
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return status, headers, body

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        self.send(path)
        return self.read()

    def close(self) -> None:
        self.sock.close()


def connections_on_each_slot(server: ServerProcess, slots: int = 2,
                             timeout: float = 15.0) -> dict[int, RawConnection]:
    """Open keep-alive connections until one is served by each worker slot."""
    found: dict[int, RawConnection] = {}

    def one_more() -> bool:
        conn = RawConnection(server)
        status, headers, _ = conn.get("/")
        assert status == 200
        slot = int(headers["x-worker"].split("-w")[1].split("/")[0])
        if slot in found:
            conn.close()
        else:
            found[slot] = conn
        return len(found) >= slots

    wait_until(one_more, timeout, f"a connection on each of {slots} slots", interval=0,
               detail=lambda: f"only slots {sorted(found)} accepted connections")
    return found


@pytest.mark.parametrize("mode", MODES)
def test_request_on_an_idle_keep_alive_connection_gets_503_during_the_drain(
    start_server: ServerFactory, tmp_path: Path, mode: str
) -> None:
    """While the server drains (a slow request holds it open), a request sent on an idle
    keep-alive connection is a new request: it must get 503 + Retry-After + Connection: close,
    not a closed connection. h1_conn's ``start_draining`` promises idle connections a short
    grace (``DRAIN_IDLE_CLOSE``) for exactly this race with a request already on the wire."""
    server = start(start_server, mode)
    conns = connections_on_each_slot(server)
    try:
        busy, idle = conns[0], conns[1]
        marker = tmp_path / "slow-started"
        busy.send(f"/slow?s=3&marker={marker}")
        wait_until(marker.exists, 10, "the slow request reaching the app")
        index = len(server.lines)
        sent = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait_for(r"Shutting down \(SIGTERM\)", start=index)
        poll_new_connections_until_503(server.url + "/")
        elapsed = time.monotonic() - sent
        try:
            status, headers, _ = idle.get("/")
        except (ConnectionError, OSError) as exc:
            pytest.fail(f"{elapsed:.3f}s after SIGTERM, with the drain still open, the request "
                        f"on the idle keep-alive connection of slot 1 got no response: {exc!r}")
        assert status == 503
        assert headers.get("retry-after")
        assert headers.get("connection") == "close"
        status, _, body = busy.read()  # the in-flight request still completes
        assert (status, body) == (200, b"slow v1")
    finally:
        for conn in conns.values():
            conn.close()
    assert server.wait_exit(timeout=20) == 0, server.output


@pytest.mark.parametrize("mode", MODES)
def test_sigint_shuts_down_like_sigterm(start_server: ServerFactory, mode: str) -> None:
    server = start(start_server, mode)
    assert httpx.get(server.url, timeout=5).status_code == 200
    server.send_signal(signal.SIGINT)
    assert server.wait_exit(timeout=20) == 0, server.output
    assert "Shutting down (SIGINT)" in server.output
    assert "Traceback" not in server.output, server.output


@pytest.mark.parametrize("mode", MODES)
def test_shutdown_is_bounded_by_timeout_graceful_shutdown(
    start_server: ServerFactory, tmp_path: Path, mode: str
) -> None:
    """A request that outlives ``--timeout-graceful-shutdown`` does not keep the server up."""
    server = start(start_server, mode, "--timeout-graceful-shutdown", "1")
    slow = SlowRequest(server, tmp_path, 60)
    slow.started()
    sent = time.monotonic()
    server.send_signal(signal.SIGTERM)
    code = server.wait_exit(timeout=20)
    took = time.monotonic() - sent
    assert took < 8, f"shutdown took {took:.1f}s with --timeout-graceful-shutdown 1"
    assert code == 0, server.output
    slow._thread.join(10)
    assert slow.response is None, "a 60 s request cannot have completed"


@pytest.mark.parametrize("mode", MODES)
def test_health_path_is_200_while_serving_and_503_while_draining(
    start_server: ServerFactory, tmp_path: Path, mode: str
) -> None:
    server = start(start_server, mode, "--health-path", "/healthz")
    with httpx.Client(timeout=5) as client:
        r = client.get(server.url + "/healthz")
        assert r.status_code == 200
        assert r.text == "ok\n"
        assert "x-version" not in r.headers  # answered by the server, not the app
        r = client.get(server.url + "/healthz?probe=1")
        assert r.status_code == 200
        assert client.get(server.url + "/").text == "v1"  # the app is reachable beside it
        assert client.get(server.url + "/elsewhere").status_code == 404
    slow = SlowRequest(server, tmp_path, 3)
    slow.started()
    server.send_signal(signal.SIGTERM)
    r = poll_new_connections_until_503(server.url + "/healthz")
    assert r.headers.get("retry-after"), dict(r.headers)
    assert slow.result(timeout=20).status_code == 200
    assert server.wait_exit(timeout=20) == 0, server.output
