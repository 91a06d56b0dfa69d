"""SIGTERM under load loses nothing: in-flight requests finish, requests arriving on open
keep-alive connections are answered (with ``Connection: close``), nothing is reset, and new
connections are refused once the listener is closed — in both worker modes and on sync workers."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory, wait_until
from tests.load import LoadClients

CLIENTS = 10
SLOW = 3


def _slow_requests(url: str, markers: list[Path], query: str
                   ) -> tuple[list[threading.Thread], list[object]]:
    results: list[object] = [None] * len(markers)

    def one(index: int) -> None:
        try:
            response = httpx.get(f"{url}/slow?{query}&marker={markers[index]}", timeout=20.0)
            results[index] = (response.status_code, response.text)
        except httpx.HTTPError as exc:
            results[index] = repr(exc)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(markers))]
    for thread in threads:
        thread.start()
    return threads, results


@pytest.mark.parametrize("app,mode", [
    ("sup_app:app", "thread"),
    ("sup_app:app", "process"),
    ("wsgi_app:app", "thread"),
    ("wsgi_app:app", "process"),
])
def test_sigterm_under_load_loses_nothing(tmp_path: Path, start_server: ServerFactory,
                                          app: str, mode: str) -> None:
    server = start_server(app, "--workers", "2", "--worker-mode", mode,
                          "--timeout-graceful-shutdown", "10", "--no-access-log")
    markers = [tmp_path / f"slow-{i}" for i in range(SLOW)]
    release = tmp_path / "release"
    wsgi = app.startswith("wsgi")
    query, body = (f"release={release}", "slow done") if wsgi else ("s=1", "slow v1")
    clients = LoadClients(server.host, server.port, CLIENTS, stop_when_refused=True).start()
    wait_until(lambda: clients.sent() > 200, 15, "clients under way")
    threads, results = _slow_requests(server.url, markers, query)
    wait_until(lambda: all(m.exists() for m in markers), 15, "slow requests in the app")

    server.send_signal(signal.SIGTERM)
    wait_until(lambda: clients.join(0.05).refused >= CLIENTS, 15, "every client refused",
               detail=lambda: clients.join(0).summary())
    release.touch()  # the sync app's slow requests end only now, well into the drain
    tally = clients.join(30)
    for thread in threads:
        thread.join(20)
    code = server.wait_exit(30)

    assert tally.lost == 0, tally.summary()
    assert tally.refused >= 1, "the listener was never closed: " + tally.summary()
    assert all(result == (200, body) for result in results), results
    assert code == 0, server.output
