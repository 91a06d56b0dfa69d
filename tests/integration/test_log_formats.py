"""What the real server prints when stdout is not a terminal: readable lines by default, one
JSON object per lifecycle event with ``--log-format json``. The server's stdout and stderr go
to a pipe here (the ``start_server`` fixture), exactly as under CI or ``| tee``."""

from __future__ import annotations

import json
import re
import signal
from typing import Any

import httpx
import pytest
from conftest import ServerFactory, ServerProcess

TIMEOUT = 20.0


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_plain_lines_and_sighup_reload(start_server: ServerFactory, mode: str) -> None:
    # Deliberately no DEVSERVE_TUI override: --tui auto must pick plain lines for a pipe.
    server = start_server("echo_app:app", "--worker-mode", mode, env={"DEVSERVE_TUI": "auto"})
    server.wait_for(r"Listening on http://127\.0\.0\.1:\d+ \(Press CTRL\+C to quit\)")
    server.wait_for(rf"Worker mode: {mode}, 1 worker \(")
    server.wait_for(rf"Serving generation 1 with 1 {mode} worker$")
    assert httpx.get(server.url, timeout=TIMEOUT).text == "hello"

    mark = len(server.lines)
    server.send_signal(signal.SIGHUP)
    m = server.wait_for(
        r"Reloaded: generation 2 ready in (\d+) ms \(.*\), previous drained in (\d+) ms",
        TIMEOUT, start=mark)
    assert int(m.group(1)) >= 0 and int(m.group(2)) >= 0
    server.wait_for(rf"Serving generation 2 with 1 {mode} worker$", TIMEOUT, start=mark)
    assert httpx.get(server.url, timeout=TIMEOUT).text == "hello"

    out = server.output
    # No dashboard and no terminal control sequences in a pipe.
    assert "\x1b[" not in out
    assert "╭" not in out and "workers" not in out
    assert server.stop() == 0
    assert "Shutting down (SIGTERM)" in server.output


def _json_events(server: ServerProcess) -> list[dict[str, Any]]:
    events = []
    for line in list(server.lines):
        if line.startswith("{"):
            data = json.loads(line)  # every JSON-looking line must be one whole object
            assert isinstance(data, dict) and "event" in data, line
            events.append(data)
    return events


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_json_lines(start_server: ServerFactory, mode: str) -> None:
    server = start_server("echo_app:app", "--worker-mode", mode, "--log-format", "json",
                          ready=False)
    started = server.wait_for(r'^\{.*"event": "ServerStarting"', TIMEOUT)
    info = json.loads(started.string)
    host, port = re.fullmatch(r"http://([\d.]+):(\d+)", info["urls"][0]).groups()  # type: ignore[union-attr]
    assert host == "127.0.0.1"
    assert info["mode"] == mode and info["workers"] == 1 and info["app"] == "echo_app:app"
    server.port = int(port)
    promoted = server.wait_for(r'^\{.*"event": "GenerationPromoted"', TIMEOUT)
    assert json.loads(promoted.string)["generation"] == 1

    for path in ("/", "/nope"):
        httpx.get(f"{server.url}{path}", timeout=TIMEOUT)
    server.wait_for(r'"event": "RequestCompleted"', TIMEOUT)
    server.wait_for(r'"path": "/nope".*"event": "RequestCompleted"', TIMEOUT)

    mark = len(server.lines)
    server.send_signal(signal.SIGHUP)
    server.wait_for(r'"event": "ReloadCompleted"', TIMEOUT, start=mark)
    assert server.stop() == 0

    events = _json_events(server)
    kinds = [e["event"] for e in events]
    for kind in ("ServerStarting", "GenerationStarted", "WorkerSpawned", "WorkerReady",
                 "GenerationPromoted", "RequestCompleted", "ReloadStarted", "ReloadCompleted",
                 "WorkerDraining", "WorkerStopped", "ServerStopping"):
        assert kind in kinds, (kind, kinds)
    assert kinds.index("ServerStarting") < kinds.index("GenerationPromoted")
    requests = [e for e in events if e["event"] == "RequestCompleted"]
    assert [(r["method"], r["path"], r["status"]) for r in requests] == [
        ("GET", "/", 200), ("GET", "/nope", 404)]
    assert all(r["generation"] == 1 and r["slot"] == 0 and r["duration"] >= 0
               for r in requests)
    assert [e["generation"] for e in events if e["event"] == "GenerationPromoted"] == [1, 2]
    # The readable lines are not printed on top of the JSON (stdout stays machine-readable).
    plain = "\n".join(server.lines)
    assert "Serving generation" not in plain and "Listening on" not in plain
