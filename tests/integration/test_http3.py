"""HTTP/3 against the real server over real UDP: an aioquic client (tests/apps/h3_client.py) and
niquests (qh3), Alt-Svc on HTTP/1.1 and HTTP/2, reloads that keep QUIC connections, junk."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import time
from pathlib import Path

import httpx
import niquests
import pytest
from apps import h3_client
from conftest import APPS, ServerFactory, ServerProcess, wait_until, wait_until_async

APP = "h3_app:app"
MODES = ["thread", "process"]


def serve(start_server: ServerFactory, mode: str = "thread", *extra: str) -> ServerProcess:
    server = start_server(APP, "--https", "--http3", "--no-access-log", "--worker-mode", mode,
                          *extra)
    server.wait_for(r"\(HTTP/3 over UDP\)")
    return server


def run(coro_factory, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    async def bounded():  # type: ignore[no-untyped-def]
        return await asyncio.wait_for(coro_factory(), timeout)
    return asyncio.run(bounded())


@pytest.mark.parametrize("mode", MODES)
def test_aioquic_client_get_post_and_50_concurrent_streams(start_server: ServerFactory,
                                                           mode: str) -> None:
    server = serve(start_server, mode)
    body = os.urandom(1024 * 1024)

    async def scenario() -> None:
        async with h3_client.h3_connect(server.host, server.port) as client:
            r = await client.request("GET", "/scope")
            assert r.status == 200
            scope = json.loads(r.text)
            assert scope["http_version"] == "3" and scope["scheme"] == "https"
            assert ["host", "localhost"] in scope["headers"]
            r = await client.request("POST", "/echo", body)
            assert r.status == 200
            assert json.loads(r.text) == {"size": len(body),
                                          "sha256": hashlib.sha256(body).hexdigest()}
            responses = await asyncio.gather(*[client.request("GET", "/") for _ in range(50)])
            assert [(x.status, x.text) for x in responses] == [(200, "hello")] * 50
            assert not client.terminated.done()  # all of it on one QUIC connection

    run(scenario)


# verify=False (the development certificate): urllib3-future, niquests' transport, warns.
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_niquests_forced_http3_and_alt_svc_discovery(start_server: ServerFactory) -> None:
    server = serve(start_server)
    url = f"https://{server.host}:{server.port}"
    body = os.urandom(1024 * 1024)
    with niquests.Session(disable_http1=True, disable_http2=True) as forced:
        r = forced.get(url + "/scope", verify=False, timeout=10)
        assert r.status_code == 200 and r.http_version == 30
        assert r.json()["http_version"] == "3"
        r = forced.post(url + "/echo", data=body, verify=False, timeout=20)
        assert r.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    with niquests.Session() as discovering:  # first over TCP, then Alt-Svc → HTTP/3
        versions = [discovering.get(url + "/", verify=False, timeout=10).http_version
                    for _ in range(3)]
        assert versions[0] in (11, 20) and versions[-1] == 30


@pytest.mark.parametrize("http3", [True, False])
def test_alt_svc_on_http1_and_http2_only_when_http3_is_on(start_server: ServerFactory,
                                                          http3: bool) -> None:
    args = [APP, "--https", "--no-access-log"] + (["--http3"] if http3 else [])
    server = start_server(*args)
    expected = f'h3=":{server.port}"; ma=86400' if http3 else None
    for http2 in (False, True):
        with httpx.Client(verify=False, http2=http2, timeout=10) as client:
            r = client.get(server.url + "/")
            assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
            assert r.headers.get("alt-svc") == expected


def test_http3_port_differs_from_tcp_port(start_server: ServerFactory) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        udp_port = probe.getsockname()[1]
    server = start_server(APP, "--https", "--http3", "--http3-port", str(udp_port))
    server.wait_for(rf"Listening on https://127\.0\.0\.1:{udp_port} \(HTTP/3 over UDP\)")
    with httpx.Client(verify=False, timeout=10) as client:
        assert client.get(server.url + "/").headers["alt-svc"] == f'h3=":{udp_port}"; ma=86400'
    assert h3_client.get(server.host, udp_port, "/").text == "hello"


def test_http3_without_tls_is_a_one_line_usage_error(start_server: ServerFactory) -> None:
    server = start_server(APP, "--http3", ready=False)
    assert server.wait_exit() == 2
    lines = [line for line in server.lines if line.strip()]
    assert len(lines) == 1, lines
    assert "--http3" in lines[0] and "TLS" in lines[0] and "--https" in lines[0]


def test_thread_mode_reloads_keep_the_quic_connection(start_server: ServerFactory,
                                                      tmp_path: Path) -> None:
    target = tmp_path / "h3_reload_target.py"
    shutil.copy(APPS / "h3_app.py", target)
    source = target.read_text()
    server = start_server("h3_reload_target:app", "--https", "--http3", "--no-access-log",
                          "--worker-mode", "thread", "--app-dir", str(tmp_path),
                          "--timeout-keep-alive", "30")
    server.wait_for(r"\(HTTP/3 over UDP\)")

    async def scenario() -> None:
        async with h3_client.h3_connect(server.host, server.port) as client:
            assert (await client.request("GET", "/version")).text == "v1"
            for generation in (2, 3, 4):
                version = "v" + str(generation) * generation  # new size: no stale bytecode
                target.write_text(source.replace('VERSION = "v1"', f'VERSION = "{version}"'))
                mark = len(server.lines)
                slow = asyncio.ensure_future(client.request("GET", "/sleep?s=0.3"))
                server.send_signal(signal.SIGHUP)
                during = []
                deadline = time.monotonic() + 20
                while not any(f"Serving generation {generation}" in line
                              for line in server.lines[mark:]):
                    assert time.monotonic() < deadline, server.output
                    during.append(await client.request("GET", "/"))
                assert all(r.status == 200 for r in during)
                assert (await slow).text == "slept"  # began on the old code, finished there
                r = await client.request("GET", "/version")
                assert (r.status, r.text) == (200, version)
            assert not client.terminated.done()  # one QUIC connection all along

    run(scenario, 90)


def test_junk_datagrams_do_not_stop_the_server(start_server: ServerFactory) -> None:
    server = serve(start_server)
    rng = random.Random(1234)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
        for i in range(20_000):
            if i % 4 == 0:  # a plausible QUIC v1 Initial header with a garbage payload
                packet = (bytes([0xC3]) + (1).to_bytes(4, "big") + b"\x08" + rng.randbytes(8)
                          + b"\x08" + rng.randbytes(8) + b"\x00\x44\xd0" + rng.randbytes(1240))
            elif i % 4 == 1:  # short header aimed at no connection
                packet = bytes([0x40]) + rng.randbytes(rng.randrange(20, 200))
            else:
                packet = rng.randbytes(rng.randrange(0, 1500))
            junk.sendto(packet, (server.host, server.port))
    def answered() -> bool:  # the server may still be chewing through the backlog
        try:
            assert h3_client.get(server.host, server.port, "/", timeout=3).text == "hello"
        except (TimeoutError, ConnectionError):
            return False
        return True

    wait_until(answered, 30, "an HTTP/3 answer after the junk", interval=0)
    with httpx.Client(verify=False, timeout=10) as client:
        assert client.get(server.url + "/").text == "hello"


def test_stream_reset_gives_the_app_http_disconnect(start_server: ServerFactory) -> None:
    server = serve(start_server)

    async def scenario() -> None:
        async with h3_client.h3_connect(server.host, server.port) as client:
            async def recorded(state: str) -> bool:
                return (await client.request("GET", "/disconnects?key=r1")).text == state

            sid, _ = client.start("GET", "/wait-disconnect?key=r1")
            await wait_until_async(lambda: recorded("waiting"), 10, "the app waiting")
            client.reset(sid)
            await wait_until_async(lambda: recorded("http.disconnect"), 10,
                                   "the app seeing http.disconnect")

    run(scenario)


@pytest.mark.parametrize("split", [False, True], ids=["before-head", "mid-body"])
@pytest.mark.parametrize("mode", MODES)
def test_shutdown_sends_goaway_and_finishes_in_flight_streams(start_server: ServerFactory,
                                                              mode: str, split: bool) -> None:
    """SIGTERM arrives while a stream is open in the app (its handler announced itself and is
    sleeping, either before sending the head or half-way through the body): the stream still
    ends with 200 and the whole body, not a reset, GOAWAY comes, and the server exits 0."""
    server = serve(start_server, mode)
    tag = f"sigterm-{mode}-{int(split)}"

    async def scenario() -> None:
        async with h3_client.h3_connect(server.host, server.port) as client:
            assert (await client.request("GET", "/")).status == 200
            _, slow = client.start("GET", f"/sleep?s=1&announce={tag}&split={int(split)}")
            await asyncio.to_thread(server.wait_for, rf"h3_app: sleep {tag} started", 10)
            assert not slow.done(), "the stream must still be open when the signal arrives"
            server.send_signal(signal.SIGTERM)
            response = await asyncio.wait_for(slow, 10)
            assert response.reset is None, f"the in-flight stream was reset ({response.reset})"
            assert (response.status, response.text) == (200, "slept")
            await asyncio.wait_for(asyncio.shield(client.terminated), 10)
            assert client.h3.goaway_seen

    run(scenario)
    assert server.wait_exit() == 0, server.output
    assert "Shutting down (SIGTERM)" in server.output


def test_process_mode_reload_closes_quic_with_goaway_and_new_connections_get_new_code(
        start_server: ServerFactory, tmp_path: Path) -> None:
    target = tmp_path / "h3_reload_proc.py"
    source = (APPS / "h3_app.py").read_text()
    target.write_text(source)
    server = start_server("h3_reload_proc:app", "--https", "--http3", "--no-access-log",
                          "--worker-mode", "process", "--app-dir", str(tmp_path))
    server.wait_for(r"\(HTTP/3 over UDP\)")

    async def scenario() -> None:
        async with h3_client.h3_connect(server.host, server.port) as client:
            assert (await client.request("GET", "/version")).text == "v1"
            target.write_text(source.replace('VERSION = "v1"', 'VERSION = "v22"'))
            server.send_signal(signal.SIGHUP)
            await asyncio.wait_for(asyncio.shield(client.terminated), 30)
            assert client.h3.goaway_seen
        await asyncio.to_thread(server.wait_for, r"Serving generation 2", 30)
        async def new_code() -> bool:  # the fresh HTTP/3 process may still be starting
            try:
                async with h3_client.h3_connect(server.host, server.port, 3) as client:
                    assert (await client.request("GET", "/version")).text == "v22"
            except (TimeoutError, ConnectionError):
                return False
            return True

        await wait_until_async(new_code, 30, "a new QUIC connection served by generation 2")

    run(scenario, 90)
