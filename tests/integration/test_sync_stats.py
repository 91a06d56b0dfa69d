"""Sync workers feed the dashboard's gauges too: WorkerStats events with their counters."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.conftest import ServerFactory, wait_until

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
    # JSON log format prints no "Listening on" line: the events carry the port and readiness.
    starting = server.wait_for(r'"urls": \["http://127\.0\.0\.1:(\d+)"\].*"ServerStarting"', 20)
    url = f"http://127.0.0.1:{starting.group(1)}"
    server.wait_for(r'"generation": 1, .*"event": "GenerationPromoted"', 20)
    for _ in range(4):
        assert httpx.get(url + "/", timeout=5).status_code == 200

    def stats_with_4_requests() -> list[dict[str, object]]:
        stats = [e for e in _events(list(server.lines)) if e["event"] == "WorkerStats"]
        return stats if stats and int(stats[-1]["requests"]) >= 4 else []  # type: ignore[call-overload]

    stats = wait_until(stats_with_4_requests, 10, "WorkerStats with 4 requests", interval=0.05,
                       detail=lambda: server.output)
    assert stats[-1]["slot"] == 0 and stats[-1]["generation"] == 1
