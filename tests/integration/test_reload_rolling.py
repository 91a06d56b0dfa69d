"""Rolling reloads (SIGHUP → ``graceful_reload()``) of the real server, in both worker modes.

The app is ``tests/apps/sup_app.py`` copied into ``tmp_path`` as ``reload_target.py`` and served
with ``--app-dir tmp_path``; an "edit" rewrites its ``VERSION`` / ``STARTUP_FAILS`` lines, as a
developer saving the file would. Thread workers re-import it (staged), process workers are
spawned fresh. Every wait is on a real signal: a log line, or responses from real clients.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from apps.sup_load import KeepAliveLoad, Outcome
from conftest import APPS, ServerFactory, ServerProcess

MODES = ["thread", "process"]
TEMPLATE = (APPS / "sup_app.py").read_text()
MODULE = "reload_target"
RELOADED_RE = r"Reloaded: generation (\d+) ready in (\d+) ms \(.*\), previous drained in (\d+) ms"
GEN_RE = re.compile(r"devserve-g(\d+)-w(\d+)")


def write_app(directory: Path, version: str, *, startup_fails: bool = False,
              syntax_error: bool = False) -> Path:
    """(Re)write the app module as an edit would."""
    source = TEMPLATE.replace('VERSION = "v1"', f"VERSION = {version!r}")
    if startup_fails:
        source = source.replace("STARTUP_FAILS = False", "STARTUP_FAILS = True")
    if syntax_error:
        source += "\ndef broken(:\n    pass\n"  # what a half-typed edit looks like
    path = directory / f"{MODULE}.py"
    path.write_text(source)
    return path


def start(start_server: ServerFactory, directory: Path, mode: str, *extra: str,
          env: dict[str, str] | None = None) -> ServerProcess:
    write_app(directory, "v1")
    return start_server(
        f"{MODULE}:app", "--app-dir", str(directory), "--workers", "2", "--worker-mode", mode,
        "--no-access-log", *extra, cwd=directory, env=env,
    )


def sighup_and_wait(server: ServerProcess, pattern: str, timeout: float = 30.0
                    ) -> tuple[re.Match[str], float]:
    """Send SIGHUP, wait for *pattern* in the lines logged after it; return the match and the
    seconds from the signal until the line was read."""
    index = len(server.lines)
    sent = time.monotonic()
    server.send_signal(signal.SIGHUP)
    match = server.wait_for(pattern, timeout=timeout, start=index)
    return match, time.monotonic() - sent


def generation_of(outcome: Outcome) -> int:
    m = GEN_RE.search(outcome.worker)
    assert m, f"no worker identity in {outcome}"
    return int(m.group(1))


def describe(failures: list[Outcome], limit: int = 5) -> str:
    return "; ".join(f"client {o.client}: {o.status} {o.error}" for o in failures[:limit])


# --- reload under load ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_reload_under_load_has_no_failed_requests_and_serves_new_code(
    start_server: ServerFactory, tmp_path: Path, mode: str
) -> None:
    server = start(start_server, tmp_path, mode)
    with KeepAliveLoad(server.url, clients=20, max_seconds=90) as load:
        load.wait_for(lambda o: o.ok and o.version == "v1", 40, what="v1 responses")
        for gen in (2, 3, 4):
            # Each edit changes the file's size too, so this test is about zero-downtime and
            # not about bytecode caching (that has its own test below).
            version = f"v{gen}-" + "x" * gen
            write_app(tmp_path, version)
            match, _ = sighup_and_wait(server, RELOADED_RE)
            assert int(match.group(1)) == gen, server.output
            seen = time.monotonic()
            # The previous generation is drained once "Reloaded" is logged: every request sent
            # from now on must be answered by the new code, by the new generation's workers.
            fresh = load.wait_for(lambda o, s=seen, v=version: o.ok and o.started > s
                                  and o.version == v, 40, what=f"{version} responses")
            stale = [o for o in load.snapshot() if o.ok and o.started > seen
                     and o.version != version]
            assert not stale, f"old code answered after the reload: {stale[:3]}"
            assert {generation_of(o) for o in fresh} == {gen}
    outcomes = load.snapshot()
    failures = [o for o in outcomes if not o.ok]
    assert not failures, (
        f"{len(failures)} of {len(outcomes)} requests failed during 3 reloads: "
        f"{describe(failures)}"
    )
    assert len(outcomes) > 200  # the load really ran across the reloads


# --- a long-lived stream must not block a reload ----------------------------------------------


class SSEClient:
    """Reads ``/sse`` in a thread; records the events and how the stream ended."""

    def __init__(self, url: str) -> None:
        self.url = url + "/sse"
        self.events: list[str] = []
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self.headers: httpx.Headers | None = None
        self.first_event = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SSEClient:
        self._thread.start()
        assert self.first_event.wait(10), f"no SSE event arrived (error: {self.error!r})"
        return self

    def _run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=httpx.Timeout(10.0)) as response:
                self.headers = response.headers
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line[6:])
                        self.first_event.set()
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.first_event.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


@pytest.mark.parametrize("mode", MODES)
def test_open_sse_stream_does_not_block_the_reload_beyond_the_grace(
    start_server: ServerFactory, tmp_path: Path, mode: str
) -> None:
    server = start(start_server, tmp_path, mode, "--reload-grace", "1")
    sse = SSEClient(server.url).start()
    write_app(tmp_path, "v2-after-sse")
    match, elapsed = sighup_and_wait(server, RELOADED_RE, timeout=15)
    assert elapsed < 5.0, f"reload took {elapsed:.1f}s with --reload-grace 1"
    assert int(match.group(3)) < 2500, match.group(0)  # drained within the grace (+ slack)
    # The stream was cut when the grace ran out, not left hanging on the retired generation.
    assert sse.join(5), "the SSE stream of the old generation is still open after the reload"
    assert len(sse.events) >= 3
    assert sse.events == [f"tick {i}" for i in range(len(sse.events))]  # no event mangled
    r = httpx.get(server.url, timeout=5)
    assert r.text == "v2-after-sse"
    assert generation_of(Outcome(0, 0, 0, 200, worker=r.headers["x-worker"])) == 2


@pytest.mark.parametrize("mode", MODES)
def test_sse_stream_cut_by_a_reload_ends_cleanly(
    start_server: ServerFactory, tmp_path: Path, mode: str
) -> None:
    """DESIGN §4.2: what remains after the grace gets a *clean* close. For an HTTP/1.1 chunked
    event stream that means the client sees the end of the body (the terminating chunk), so an
    EventSource reconnects instead of reporting a broken response."""
    server = start(start_server, tmp_path, mode, "--reload-grace", "1")
    sse = SSEClient(server.url).start()
    sighup_and_wait(server, RELOADED_RE, timeout=15)
    assert sse.join(5), "the SSE stream is still open after the reload"
    assert sse.error is None, (
        f"the stream ended with {type(sse.error).__name__}: {sse.error} "
        f"after {len(sse.events)} events"
    )


# --- a broken new generation ------------------------------------------------------------------


@pytest.mark.parametrize("breakage", ["syntax_error", "startup_fails"])
@pytest.mark.parametrize("mode", MODES)
def test_broken_new_generation_keeps_the_old_one_serving_and_a_fix_reloads(
    start_server: ServerFactory, tmp_path: Path, mode: str, breakage: str
) -> None:
    server = start(start_server, tmp_path, mode)
    with KeepAliveLoad(server.url, clients=4, max_seconds=90) as load:
        load.wait_for(lambda o: o.ok and o.version == "v1", 10, what="v1 responses")
        write_app(tmp_path, "v2-broken", **{breakage: True})
        match, _ = sighup_and_wait(
            server, r"Reload failed, generation (\d+) keeps serving: (.*)|" + RELOADED_RE
        )
        assert match.group(0).startswith("Reload failed"), (
            f"the broken edit was promoted: {match.group(0)}"
        )
        assert match.group(1) == "1"
        expected = "SyntaxError" if breakage == "syntax_error" else "startup exploded in v2-broken"
        assert expected in match.group(2)
        after_failure = time.monotonic()
        load.wait_for(lambda o: o.ok and o.started > after_failure, 20,
                      what="responses after the failed reload")
        assert {o.version for o in load.snapshot() if o.ok} == {"v1"}
        assert {generation_of(o) for o in load.snapshot() if o.ok} == {1}

        write_app(tmp_path, "v3-fixed")
        match, _ = sighup_and_wait(server, RELOADED_RE)
        assert match.group(1) == "2"
        seen = time.monotonic()
        load.wait_for(lambda o: o.ok and o.started > seen and o.version == "v3-fixed", 20,
                      what="responses from the fixed code")
        stale = [o for o in load.snapshot() if o.started > seen and o.version != "v3-fixed"]
        assert not stale, stale[:3]
    failures = load.failures()
    assert not failures, f"{len(failures)} requests failed: {describe(failures)}"


# --- bytecode caches must not serve stale code ------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_reload_sees_an_edit_saved_within_the_same_second(
    start_server: ServerFactory, tmp_path: Path, mode: str
) -> None:
    """A ``.pyc`` is validated by the source's whole-second mtime and its size: an edit that
    keeps the size, saved within the same second as the previous import (editors and
    format-on-save do this), must still be served after the reload (DESIGN §4.3/§4.4)."""
    # Let the server write bytecode, as it does on a developer machine.
    server = start(start_server, tmp_path, mode, env={"PYTHONDONTWRITEBYTECODE": ""})
    assert httpx.get(server.url, timeout=5).text == "v1"
    path = tmp_path / f"{MODULE}.py"
    assert list((tmp_path / "__pycache__").glob(f"{MODULE}.*.pyc")), "no bytecode was written"
    before = path.stat()
    write_app(tmp_path, "v2")  # same length as "v1"
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # saved in the same second
    assert path.stat().st_size == before.st_size
    sighup_and_wait(server, RELOADED_RE)
    answers = {httpx.get(server.url, timeout=5).text for _ in range(6)}
    assert answers == {"v2"}, f"after the reload the server answered {answers}"


def _get_on(sock: socket.socket) -> bytes:
    """One GET / on an open keep-alive connection; the body (read to its Content-Length)."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection; got {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        body += chunk
    return body


@pytest.mark.parametrize("mode", MODES)
def test_idle_keep_alive_connections_are_served_by_the_new_generation(
    start_server: ServerFactory, tmp_path: Path, mode: str
) -> None:
    """A browser keeps idle keep-alive connections open across a reload and reuses them for
    the next request: each is handed to the new generation (process mode: through the
    Supervisor's pipes) instead of being closed under it, so the request after the reload —
    sent once the old generation is gone — is answered by the new code on the same connection.
    """
    server = start(start_server, tmp_path, mode)
    conns = [socket.create_connection((server.host, server.port), timeout=10) for _ in range(4)]
    try:
        assert {_get_on(c) for c in conns} == {b"v1"}
        write_app(tmp_path, "v2")
        match, _ = sighup_and_wait(server, RELOADED_RE)
        assert int(match.group(3)) < 400, "the old generation waited for idle connections"
        assert [_get_on(c) for c in conns] == [b"v2"] * 4
    finally:
        for c in conns:
            c.close()
