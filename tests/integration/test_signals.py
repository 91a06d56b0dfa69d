"""SIGTERM / SIGINT on the real server, in thread and process worker mode: graceful completion of
in-flight requests, exit code 0, lifespan shutdown, a prompt exit on a second Ctrl+C, and
``--shutdown-delay`` honoured by SIGTERM but skipped (or cut short) by SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServerFactory, ServerProcess, wait_until

from tests.load import connect_refused

TIMEOUT = 10.0

pytestmark = pytest.mark.parametrize("mode", ["thread", "process"])


def start(start_server: ServerFactory, tmp_path: Path, mode: str, *extra: str
          ) -> tuple[ServerProcess, Path]:
    marker = tmp_path / "lifespan-shutdown"
    server = start_server("echo_app:app", "--worker-mode", mode, *extra,
                          env={"ECHO_APP_SHUTDOWN_MARKER": str(marker)})
    server.wait_for(rf"Serving generation 1 with 1 {mode} worker")
    return server, marker


def slow_request(server: ServerProcess, seconds: float, started: Path) -> tuple[
        threading.Thread, dict[str, Any]]:
    """GET /slow in a thread; returns once the app has started handling it."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            r = httpx.get(f"{server.url}/slow", params={"s": str(seconds), "marker": str(started)},
                          timeout=seconds + TIMEOUT)
            result["status"], result["text"] = r.status_code, r.text
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(started.exists, TIMEOUT, f"{started} to appear")
    return thread, result


def descendants(pid: int) -> list[int]:
    """Child processes of *pid* (Linux /proc), depth first."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            text = children.read_text()
        except OSError:
            continue
        for child in map(int, text.split()):
            found += [child, *descendants(child)]
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL a server this test started and its worker processes (by pid)."""
    for target in [*descendants(pid), pid]:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


def exit_code(server: ServerProcess, timeout: float) -> int:
    try:
        return server.wait_exit(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"server still running {timeout}s after the signal:\n{server.output}")


def wait_until_refusing(server: ServerProcess, timeout: float = 2.0) -> None:
    """Poll with fresh connections until one is refused: the listener is closed, so the
    Supervisor is draining the workers."""
    wait_until(lambda: connect_refused(server.host, server.port), timeout,
               "new connections refused while shutting down", interval=0.02,
               detail=lambda: server.output)


def test_sigterm_lets_in_flight_request_complete(start_server: ServerFactory, tmp_path: Path,
                                                 mode: str) -> None:
    server, marker = start(start_server, tmp_path, mode)
    thread, result = slow_request(server, 1.5, tmp_path / "slow-started")
    server.send_signal(signal.SIGTERM)
    server.wait_for(r"Shutting down \(SIGTERM\)")

    # While the slow request finishes, new connections are refused (not reset).
    wait_until_refusing(server, timeout=1.0)
    assert thread.is_alive(), "the slow request was still expected to be in flight"

    thread.join(TIMEOUT)
    assert result == {"status": 200, "text": "slow done"}
    assert exit_code(server, TIMEOUT) == 0
    assert marker.read_text() == "shutdown"


def test_sigint_exits_0_after_lifespan_shutdown(start_server: ServerFactory, tmp_path: Path,
                                                mode: str) -> None:
    server, marker = start(start_server, tmp_path, mode)
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        assert client.get("/").status_code == 200
        assert not marker.exists(), "lifespan shutdown must not run before the stop"
        server.send_signal(signal.SIGINT)
        assert exit_code(server, TIMEOUT) == 0
    assert marker.read_text() == "shutdown"
    assert "Shutting down (SIGINT)" in server.output
    assert "Traceback" not in server.output, server.output


def test_second_sigint_exits_promptly(start_server: ServerFactory, tmp_path: Path,
                                      mode: str) -> None:
    server, _ = start(start_server, tmp_path, mode)
    try:
        thread, result = slow_request(server, 60.0, tmp_path / "slow-started")
        server.send_signal(signal.SIGINT)
        server.wait_for(r"Shutting down \(SIGINT\)")
        # A human presses Ctrl+C again after seeing the server wait, not within milliseconds.
        wait_until_refusing(server)
        assert server.proc.poll() is None, "the first SIGINT waits for the in-flight request"
        assert thread.is_alive()
        second = time.monotonic()
        server.send_signal(signal.SIGINT)
        exit_code(server, 5.0)
        assert time.monotonic() - second < 5.0
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        assert "error" in result, f"the abandoned request cannot have completed: {result}"
    finally:
        if server.proc.poll() is None:  # failed: do not wait out the 30 s grace at teardown
            kill_tree(server.proc.pid)
            server.proc.wait(5)


def test_sigint_skips_the_shutdown_delay(start_server: ServerFactory, tmp_path: Path,
                                         mode: str) -> None:
    """Ctrl+C is a person at the terminal: no load balancer to wait for."""
    server, marker = start(start_server, tmp_path, mode, "--shutdown-delay", "30")
    assert httpx.get(server.url, timeout=TIMEOUT).status_code == 200
    sent = time.monotonic()
    server.send_signal(signal.SIGINT)
    assert exit_code(server, TIMEOUT) == 0
    assert time.monotonic() - sent < TIMEOUT
    assert "Shutdown delay" not in server.output, server.output
    assert marker.read_text() == "shutdown"


def test_sigint_cuts_a_running_shutdown_delay_short(start_server: ServerFactory,
                                                    tmp_path: Path, mode: str) -> None:
    server, marker = start(start_server, tmp_path, mode, "--shutdown-delay", "30")
    index = len(server.lines)
    server.send_signal(signal.SIGTERM)
    server.wait_for(r"Shutdown delay: health 503 for 30 s", start=index)
    assert not connect_refused(server.host, server.port), "the delay keeps the listener open"
    sent = time.monotonic()
    server.send_signal(signal.SIGINT)
    assert exit_code(server, TIMEOUT) == 0  # a graceful stop, only without the rest of the delay
    assert time.monotonic() - sent < TIMEOUT
    server.wait_for(r"Draining: new connections refused", start=index)
    assert marker.read_text() == "shutdown"
