"""A rolling restart behind a real HAProxy loses nothing: three devserve instances under load,
each in turn SIGTERMed, left to exit, and started again on its port — with HTTP health checks
(and ``--shutdown-delay``) and with plain TCP checks.

HAProxy retries a request whose connection failed or got an empty response (``retry-on
conn-failure empty-response``) on another server, but never one that got a 503: so the server must
refuse (not reset) new connections once it stops accepting, answer every request it read, and close
idle keep-alive connections without racing a request already on its way."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests import haproxy
from tests.conftest import ServerFactory, ServerProcess, wait_until
from tests.load import LoadClients

INSTANCES = 3
CLIENTS = 20
HEALTH = "/healthz"


def _start(start_server: ServerFactory, port: int, http_check: bool) -> ServerProcess:
    extra = ["--health-path", HEALTH, "--shutdown-delay", "0.5"] if http_check else []
    return start_server("sup_app:app", "--workers", "2", "--port", str(port),
                        "--timeout-graceful-shutdown", "10", *extra)


def _served(server: ServerProcess) -> int:
    return sum(1 for line in list(server.lines) if '"GET / HTTP/1.1" 200' in line)


@pytest.mark.parametrize("http_check", [True, False], ids=["http-check", "tcp-check"])
def test_rolling_restart_behind_haproxy_loses_nothing(tmp_path: Path,
                                                      start_server: ServerFactory,
                                                      http_check: bool) -> None:
    ports = [haproxy.free_port() for _ in range(INSTANCES)]
    front = haproxy.free_port()
    servers = [_start(start_server, port, http_check) for port in ports]
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy.config(front, ports, HEALTH if http_check else None))
    proxy = haproxy.HAProxy(config)
    clients: LoadClients | None = None
    try:
        clients = LoadClients("127.0.0.1", front, CLIENTS, timeout=15.0)
        wait_until(lambda: haproxy.connectable(front), 10, "haproxy listening")
        clients.start()
        wait_until(lambda: all(_served(s) > 20 for s in servers), 20,
                   "every instance serving through haproxy")
        for index, port in enumerate(ports):
            old = servers[index]
            old.send_signal(signal.SIGTERM)
            assert old.wait_exit(30) == 0, old.output
            servers[index] = _start(start_server, port, http_check)
            _wait_in_rotation(servers[index])
        tally = clients.stop()
        clients = None
    finally:
        if clients is not None:
            clients.stop()
        log = proxy.stop()
    assert tally.ok > 1000, tally.summary()
    assert tally.lost == 0, tally.summary() + "\n" + log[-3000:]


def _wait_in_rotation(server: ServerProcess) -> None:
    wait_until(lambda: _served(server) > 20, 20, "the restarted instance back in rotation",
               detail=lambda: server.output)

