"""Sync workers feed the dashboard's gauges too: WorkerStats events with their counters."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.conftest import ServerFactory

APPS = Path(__file__).resolve().parents[1] / "apps"


def _events(lines: list[str]) -> list[dict[str, object]]:
    out = []
    for line in lines:
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def test_sync_workers_emit_worker_stats(start_server: ServerFactory) -> None:
    server = start_server("wsgi_app:app", "--app-dir", str(APPS), "--worker-mode", "thread",
                          "--log-format", "json", "--no-access-log", ready=False)
    deadline = time.monotonic() + 20
    port = None
    while port is None:
        assert time.monotonic() < deadline, server.output
        for e in _events(list(server.lines)):
            if e["event"] == "ServerStarting":
                port = int(str(e["urls"][0]).rsplit(":", 1)[1])  # type: ignore[index]
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(url + "/", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for _ in range(3):
        assert httpx.get(url + "/", timeout=5).status_code == 200
    deadline = time.monotonic() + 10
    while True:
        stats = [e for e in _events(list(server.lines)) if e["event"] == "WorkerStats"]
        if stats and int(stats[-1]["requests"]) >= 4:  # type: ignore[call-overload]
            break
        assert time.monotonic() < deadline, f"no WorkerStats with 4 requests: {stats[-3:]}"
        time.sleep(0.05)
    assert stats[-1]["slot"] == 0 and stats[-1]["generation"] == 1
