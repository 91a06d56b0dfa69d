"""Open WebSockets across a rolling reload (SIGHUP) and a shutdown (SIGTERM), in both worker
modes, with ``--workers 1``.

The app is ``tests/apps/ws_reload_app.py`` copied into ``tmp_path`` and served with
``--app-dir tmp_path``; it answers ``PREFIX:<message>``. Before the SIGHUP the test rewrites
``PREFIX = "v1"`` to ``"v2"`` as a developer saving the file would, so a client that reconnects
after its 1012 must be answered by the new code. Open sockets must not stretch the reload: the
drained time the server logs has to stay well under ``--reload-grace``.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS, ServerFactory, ServerProcess
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

MODES = ["thread", "process"]
TEMPLATE = (APPS / "ws_reload_app.py").read_text()
MODULE = "ws_reload_target"
RELOADED_RE = r"Reloaded: generation (\d+) ready in (\d+) ms \(.*\), previous drained in (\d+) ms"
GRACE = 2.0
SOCKETS = 20
TIMEOUT = 10.0


def write_app(directory: Path, prefix: str) -> None:
    source = TEMPLATE.replace('PREFIX = "v1"', f"PREFIX = {prefix!r}")
    assert source != TEMPLATE or prefix == "v1"
    (directory / f"{MODULE}.py").write_text(source)


def start(start_server: ServerFactory, directory: Path, mode: str) -> ServerProcess:
    write_app(directory, "v1")
    return start_server(
        f"{MODULE}:app", "--app-dir", str(directory), "--workers", "1", "--worker-mode", mode,
        "--reload-grace", str(GRACE), "--no-access-log", cwd=directory,
    )


async def open_clients(server: ServerProcess, n: int) -> list[ClientConnection]:
    url = f"ws://{server.host}:{server.port}/"
    clients = await asyncio.gather(*(
        connect(url, open_timeout=TIMEOUT, ping_interval=None, close_timeout=TIMEOUT)
        for _ in range(n)))
    replies = await asyncio.gather(*(talk(ws, f"hello {i}") for i, ws in enumerate(clients)))
    assert replies == [f"v1:hello {i}" for i in range(n)]
    return clients


async def talk(ws: ClientConnection, text: str) -> Any:
    await ws.send(text)
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def wait_closed(ws: ClientConnection) -> tuple[int | None, str | None, float]:
    """Block until the server closes *ws*: (close code received, reason, monotonic time)."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as exc:
        rcvd = exc.rcvd
        return (rcvd.code if rcvd else None, rcvd.reason if rcvd else None, time.monotonic())


async def close_all(clients: list[ClientConnection]) -> None:
    await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)


# --- reload ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_reload_closes_sockets_1012_then_clients_reach_new_code(
        start_server: ServerFactory, tmp_path: Path, mode: str) -> None:
    server = start(start_server, tmp_path, mode)

    async def scenario() -> None:
        clients = await open_clients(server, SOCKETS)
        reconnected: list[ClientConnection] = []
        try:
            closers = [asyncio.create_task(wait_closed(ws)) for ws in clients]
            write_app(tmp_path, "v2")
            index = len(server.lines)
            sent = time.monotonic()
            server.send_signal(signal.SIGHUP)
            _, pending = await asyncio.wait(closers, timeout=TIMEOUT + GRACE)
            assert not pending, (
                f"{len(pending)} of {SOCKETS} sockets were not closed within "
                f"{TIMEOUT + GRACE}s of SIGHUP; output:\n{server.output}")
            results = [task.result() for task in closers]
            codes = [code for code, _, _ in results]
            assert codes == [1012] * SOCKETS, codes

            match = await asyncio.to_thread(server.wait_for, RELOADED_RE, TIMEOUT, index)
            reloaded_at = time.monotonic()
            ready_ms, drained_ms = int(match.group(2)), int(match.group(3))
            # Open sockets do not stretch the reload: they are closed at once, not waited for.
            assert drained_ms < GRACE * 1000 / 2, (drained_ms, server.output)
            # Every socket was closed once the new generation was ready, within the grace.
            latest = max(at for _, _, at in results) - sent
            assert latest < ready_ms / 1000 + GRACE, (latest, ready_ms)
            assert reloaded_at - sent < ready_ms / 1000 + GRACE + 1.0  # the line came promptly

            # Reconnect: the new generation answers with the edited code.
            url = f"ws://{server.host}:{server.port}/"
            reconnected.extend(await asyncio.gather(*(
                connect(url, open_timeout=TIMEOUT, ping_interval=None)
                for _ in range(SOCKETS))))
            replies = await asyncio.gather(*(
                talk(ws, f"again {i}") for i, ws in enumerate(reconnected)))
            assert replies == [f"v2:again {i}" for i in range(SOCKETS)]
        finally:
            await close_all(clients + reconnected)

    asyncio.run(asyncio.wait_for(scenario(), 90))
    assert server.proc.poll() is None, server.output
    assert "Traceback" not in server.output, server.output


@pytest.mark.parametrize("mode", MODES)
def test_reload_closes_socket_accepted_while_draining(
        start_server: ServerFactory, tmp_path: Path, mode: str) -> None:
    """A handshake still in flight when the drain starts: the app accepts it afterwards, and
    the socket is then closed with 1012 right away instead of holding the old generation until
    the grace runs out."""
    server = start(start_server, tmp_path, mode)
    release = tmp_path / "release-accept"

    async def scenario() -> None:
        url = f"ws://{server.host}:{server.port}/slow?release={release}"

        async def open_slow() -> ClientConnection:
            return await connect(url, open_timeout=TIMEOUT + GRACE, ping_interval=None)

        opening = asyncio.create_task(open_slow())
        # The app has the handshake in hand once it logs that it is waiting.
        await asyncio.to_thread(server.wait_for, "slow accept: waiting", TIMEOUT)
        write_app(tmp_path, "v2")
        index = len(server.lines)
        server.send_signal(signal.SIGHUP)
        await asyncio.to_thread(server.wait_for, r"Serving generation 2", TIMEOUT, index)
        release.write_text("go")  # the old generation is draining now: let the app accept
        ws = await opening
        try:
            code, _, _ = await asyncio.wait_for(wait_closed(ws), TIMEOUT)
        finally:
            await ws.close()
        match = await asyncio.to_thread(server.wait_for, RELOADED_RE, TIMEOUT, index)
        assert code == 1012, (code, server.output)
        assert int(match.group(3)) < GRACE * 1000 / 2, server.output

    asyncio.run(asyncio.wait_for(scenario(), 60))


# --- shutdown -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_sigterm_closes_sockets_1001_and_exits_0(
        start_server: ServerFactory, tmp_path: Path, mode: str) -> None:
    server = start(start_server, tmp_path, mode)

    async def scenario() -> list[tuple[int | None, str | None, float]]:
        clients = await open_clients(server, SOCKETS)
        try:
            closers = [asyncio.create_task(wait_closed(ws)) for ws in clients]
            server.send_signal(signal.SIGTERM)
            _, pending = await asyncio.wait(closers, timeout=TIMEOUT)
            assert not pending, f"{len(pending)} sockets still open; output:\n{server.output}"
            return [task.result() for task in closers]
        finally:
            await close_all(clients)

    results = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert [code for code, _, _ in results] == [1001] * SOCKETS, (results, server.output)
    assert server.wait_exit(TIMEOUT) == 0, server.output

