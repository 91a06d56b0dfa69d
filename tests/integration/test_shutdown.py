"""Graceful shutdown of the real server (SIGTERM / SIGINT), in both worker modes.

Contract: the listener closes first, so a new connection is *refused* (never accepted and then
reset); in-flight requests finish; a request that still arrives on an open keep-alive
connection is answered normally, with ``Connection: close``, and the connection then closes
gracefully; with ``--shutdown-delay`` the health path answers 503 at once while everything else
is served for the delay; exit code 0. A slow request (``/slow?s=..&marker=..``, which writes
the marker file when it starts) holds the drain open so it can be observed; every wait polls a
real signal. (``test_lossless_shutdown.py`` counts every request under load.)
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import ServerFactory, ServerProcess, wait_until

from tests.load import LoadClients, connect_refused

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


def wait_until_refused(server: ServerProcess, timeout: float = 10.0) -> float:
    """Poll fresh connects until one is refused (the listener is closed); returns when.
    Until then a connect is accepted; a reset fails the test (see ``connect_refused``)."""
    wait_until(lambda: connect_refused(server.host, server.port), timeout,
               "new connections refused", interval=0.005)
    return time.monotonic()


@pytest.mark.parametrize("mode", MODES)
def test_sigterm_under_load_answers_open_connections_refuses_new_ones_and_exits_0(
    start_server: ServerFactory, tmp_path: Path, mode: str
) -> None:
    server = start(start_server, mode)
    clients = LoadClients(server.host, server.port, 20, stop_when_refused=True).start()
    wait_until(lambda: clients.sent() > 100, 15, "responses before the shutdown",
               detail=lambda: clients.join(0).summary())
    slow = SlowRequest(server, tmp_path, 3)
    slow.started()
    index = len(server.lines)
    sent = time.monotonic()
    server.send_signal(signal.SIGTERM)
    server.wait_for(r"Shutting down \(SIGTERM\)", start=index)

    # The listener closes first, while the slow request still holds the drain open.
    refused_at = wait_until_refused(server)
    assert refused_at - sent < 2.5, "new connections were accepted for the whole drain"
    assert server.proc.poll() is None, "the server exited while a request was in flight"

    done = slow.result(timeout=20)
    assert (done.status_code, done.text) == (200, "slow v1")
    assert done.headers.get("connection") == "close"  # answered during the drain
    tally = clients.join(20)
    assert server.wait_exit(timeout=20) == 0, server.output
    assert tally.lost == 0, tally.summary()
    # A client leaves its keep-alive connection only after a response said Connection: close,
    # and then finds the listener closed.
    assert tally.refused == 20 and tally.closes >= 20, tally.summary()
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
def test_request_on_an_idle_keep_alive_connection_is_answered_with_close_during_the_drain(
    start_server: ServerFactory, tmp_path: Path, mode: str
) -> None:
    """While the server drains (a slow request holds it open), a request sent on an idle
    keep-alive connection was already on its way: it is answered (200, not 503) with
    ``Connection: close``, then the connection closes gracefully (FIN, no reset). Idle
    connections get a short grace (``DRAIN_IDLE_CLOSE``) for exactly this race."""
    server = start(start_server, mode)
    conns = connections_on_each_slot(server)
    try:
        busy, idle = conns[0], conns[1]
        marker = tmp_path / "slow-started"
        busy.send(f"/slow?s=3&marker={marker}")
        wait_until(marker.exists, 10, "the slow request reaching the app")
        index = len(server.lines)
        server.send_signal(signal.SIGTERM)
        server.wait_for(r"Draining: new connections refused", start=index)

        def answered_with_close() -> bool:
            # A process child may take the drain a moment after the Supervisor logged it:
            # until then the answer is a plain keep-alive one, and the connection stays open.
            try:
                status, headers, body = idle.get("/")
            except (ConnectionError, OSError) as exc:
                pytest.fail(f"the request on the idle keep-alive connection of slot 1 got no "
                            f"response during the drain: {exc!r}")
            assert (status, body) == (200, b"v1")
            return headers.get("connection") == "close"

        wait_until(answered_with_close, 5, "a response with Connection: close", interval=0)
        assert idle.sock.recv(1) == b"", "the connection stayed open after Connection: close"
        status, headers, body = busy.read()  # the in-flight request still completes
        assert (status, body) == (200, b"slow v1")
        assert headers.get("connection") == "close"
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
def test_health_turns_503_at_sigterm_while_the_app_is_served_through_the_shutdown_delay(
    start_server: ServerFactory, mode: str
) -> None:
    """``--shutdown-delay``: at SIGTERM every worker's health endpoint answers 503 at once,
    while the app is served normally (keep-alive, no ``Connection: close``) for the delay; only
    then does the listener close. The log shows both phases."""
    delay = 3.0
    server = start(start_server, mode, "--health-path", "/healthz", "--shutdown-delay",
                   str(delay))
    with httpx.Client(timeout=5) as client:
        r = client.get(server.url + "/healthz")
        assert (r.status_code, r.text) == (200, "ok\n")
        assert "x-version" not in r.headers  # answered by the server, not the app
        assert client.get(server.url + "/healthz?probe=1").status_code == 200
        assert client.get(server.url + "/").text == "v1"  # the app is reachable beside it
        assert client.get(server.url + "/elsewhere").status_code == 404
    conns = connections_on_each_slot(server)
    try:
        index = len(server.lines)
        sent = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait_for(rf"Shutdown delay: health 503 for {delay:g} s", start=index)
        for slot, conn in conns.items():
            status, headers, body = conn.get("/")
            assert (status, body) == (200, b"v1")
            assert headers.get("connection") != "close", "the app is served normally"

            def unhealthy(conn: RawConnection = conn) -> bool:
                # A process child gets the word a moment after the Supervisor logged it.
                status, headers, _ = conn.get("/healthz")
                return status == 503 and bool(headers.get("retry-after"))

            wait_until(unhealthy, 1.0, f"health 503 on slot {slot}", interval=0)
        assert time.monotonic() - sent < delay, "the delay was over before the checks ran"
        assert not connect_refused(server.host, server.port), "closed during the delay"
    finally:
        for conn in conns.values():
            conn.close()
    refused_at = wait_until_refused(server, timeout=delay + 5)
    assert refused_at - sent >= delay - 0.2, "the listener closed before the delay was over"
    server.wait_for(r"Draining: new connections refused", start=index)
    assert server.wait_exit(timeout=20) == 0, server.output


STARTUP_APP = '''
import os
import time
from pathlib import Path

FIRST, RELEASE = Path(os.environ["FIRST"]), Path(os.environ["RELEASE"])


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        try:  # the first worker to start serves at once, the second waits for RELEASE
            os.close(os.open(FIRST, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            deadline = time.monotonic() + 20
            while not RELEASE.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"up"})
'''


def test_sigterm_while_generation_1_starts_lets_it_start_then_stops_cleanly(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """One process worker serves while the other is still starting when SIGTERM arrives:
    the start finishes, then the usual stop drains both (it used to abandon the start,
    force-close the serving worker and exit 3 as if the app could not be imported)."""
    (tmp_path / "startup_app.py").write_text(STARTUP_APP)
    first, release = tmp_path / "first", tmp_path / "release"
    server = start_server("startup_app:app", "--app-dir", str(tmp_path), "--workers", "2",
                          "--worker-mode", "process", ready=False,
                          env={"FIRST": str(first), "RELEASE": str(release)})
    match = server.wait_for(r"Listening on http://127\.0\.0\.1:(\d+)")
    server.port = int(match.group(1))
    with httpx.Client(timeout=5) as client:
        wait_until(lambda: first.exists(), 15, "the first worker started")

        def serving() -> bool:
            try:
                return client.get(server.url).text == "up"
            except httpx.TransportError:
                return False

        wait_until(serving, 15, "the first worker serving")
        server.send_signal(signal.SIGTERM)
        server.wait_for(r"Shutting down \(SIGTERM\)")
        assert client.get(server.url).text == "up", "the serving worker was dropped"
        release.touch()
        assert server.wait_exit(timeout=20) == 0, server.output
    assert "Serving generation 1" in server.output
    assert "error" not in server.output.lower(), server.output
