"""Hot reload end to end: a real ``devserve --reload`` subprocess, real files edited in its project
directory, real HTTP clients. Every wait is a log line or an HTTP poll with a deadline; a claim
that something did *not* happen is proven by a later real edit being the only thing that did."""

from __future__ import annotations

import re
import shutil
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import ServerFactory, ServerProcess, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WATCHING_RE = r"Watching for changes in (\d+) director(?:y|ies) under "
SAVE_TO_SERVE_BOUND = 5.0  # generous: the real number is printed, this only catches hangs
POLL = 0.005


def plain_app(message: str, extra: str = "") -> str:
    """A dependency-free ASGI app answering MESSAGE; ``/sse`` streams forever."""
    return textwrap.dedent(extra) + textwrap.dedent(f"""
        import asyncio
        import os

        MESSAGE = {message!r}

        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                while True:
                    m = await receive()
                    if m["type"] == "lifespan.startup":
                        await send({{"type": "lifespan.startup.complete"}})
                    else:
                        await send({{"type": "lifespan.shutdown.complete"}})
                        return
            if scope["type"] != "http":
                return
            if scope["path"] == "/sse":
                await send({{"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/event-stream")]}})
                n = 0
                while True:  # forever: only the server can end this stream
                    await send({{"type": "http.response.body", "more_body": True,
                                "body": f"data: {{MESSAGE}} {{n}}\\n\\n".encode()}})
                    n += 1
                    await asyncio.sleep(0.05)
            body = MESSAGE.encode()
            await send({{"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain"),
                                    (b"content-length", str(len(body)).encode())]}})
            await send({{"type": "http.response.body", "body": body}})
    """)


def wait_watching(server: ServerProcess) -> int:
    """The watcher has registered every watch; returns how many directories it watches."""
    return int(server.wait_for(WATCHING_RE, 15).group(1))


def count(server: ServerProcess, pattern: str) -> int:
    regex = re.compile(pattern)
    return sum(1 for line in list(server.lines) if regex.search(line))


class Poller:
    """GETs *path* every 5 ms on one keep-alive client until the body matches; records failures
    (a zero-downtime reload should have none)."""

    def __init__(self, server: ServerProcess, path: str = "/") -> None:
        self.client = httpx.Client(base_url=server.url, timeout=5.0)
        self.path = path
        self.failures: list[str] = []

    def close(self) -> None:
        self.client.close()

    def get(self) -> str:
        r = self.client.get(self.path)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.text

    def until(self, predicate: str | re.Pattern[str], timeout: float = SAVE_TO_SERVE_BOUND * 2,
              server: ServerProcess | None = None) -> str:
        regex = re.compile(re.escape(predicate)) if isinstance(predicate, str) else predicate
        last = [""]

        def served() -> str:
            try:
                r = self.client.get(self.path)
                last[0] = f"{r.status_code} {r.text!r}"
                if r.status_code == 200 and regex.search(r.text):
                    return r.text
            except httpx.TransportError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                last[0] = self.failures[-1]
            return ""

        def detail() -> str:
            log = f"\nserver output:\n{server.output}" if server is not None else ""
            return f"last: {last[0]}{log}"

        return wait_until(served, timeout, f"{regex.pattern!r} served", interval=POLL,
                          detail=detail)


def save_and_time(server: ServerProcess, poller: Poller, path: Path, source: str,
                  expected: str, label: str) -> float:
    """Write *source* to *path*, poll until *expected* is served; return and print the time."""
    start = time.perf_counter()
    path.write_text(source)
    poller.until(expected, server=server)
    elapsed = time.perf_counter() - start
    print(f"\n[save-to-serve] {label}: {elapsed * 1000:.1f} ms")
    return elapsed


# --- edit → new response -------------------------------------------------------------------------


def test_plain_app_edit_serves_new_text(tmp_path: Path, start_server: ServerFactory) -> None:
    app = tmp_path / "app.py"
    app.write_text(plain_app("first version"))
    server = start_server("app:app", "--reload")
    assert wait_watching(server) == 1
    poller = Poller(server)
    try:
        assert poller.get() == "first version"
        times = []
        for i in range(3):
            mark = len(server.lines)
            times.append(save_and_time(server, poller, app, plain_app(f"edit {i}"), f"edit {i}",
                                       f"plain app, edit {i + 1}"))
            server.wait_for(rf"Reloaded: generation {i + 2} ready in \d+ ms", 10, start=mark)
            assert count(server, r"Change detected in app\.py: reloading") == i + 1
        assert max(times) < SAVE_TO_SERVE_BOUND, times
        assert poller.failures == [], poller.failures
    finally:
        poller.close()
    assert "Traceback" not in server.output, server.output


def test_fastapi_app_edit_serves_new_text(tmp_path: Path, start_server: ServerFactory) -> None:
    app = tmp_path / "fastapi_app.py"
    shutil.copy(EXAMPLES / "fastapi_app.py", app)
    original = app.read_text()
    assert '"Hello from FastAPI"' in original
    server = start_server("fastapi_app:app", "--reload")
    wait_watching(server)
    poller = Poller(server)
    try:
        assert poller.client.get("/").json() == {"message": "Hello from FastAPI"}
        elapsed = save_and_time(
            server, poller, app, original.replace('"Hello from FastAPI"', '"Edited FastAPI"'),
            '{"message":"Edited FastAPI"}', "FastAPI app")
        assert elapsed < SAVE_TO_SERVE_BOUND
        server.wait_for(r"Reloaded: generation 2 ready", 10)
        # The rest of the app came back with it (routes, lifespan state).
        assert poller.client.get("/items/5?q=x").json() == {"item_id": 5, "q": "x"}
        assert poller.client.get("/state").json()["greeting"] == "state from lifespan"
        assert poller.failures == [], poller.failures
    finally:
        poller.close()


# --- ignored trees -------------------------------------------------------------------------------


def test_edits_in_venv_and_node_modules_never_reload(tmp_path: Path,
                                                      start_server: ServerFactory) -> None:
    venv_file = tmp_path / ".venv" / "lib" / "python3.11" / "site-packages" / "dep" / "mod.py"
    nm_file = tmp_path / "node_modules" / "tool" / "build.py"
    nm_env = tmp_path / "node_modules" / "tool" / ".env"
    for f in (venv_file, nm_file, nm_env):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x = 0\n")
    app = tmp_path / "app.py"
    app.write_text(plain_app("before"))
    server = start_server("app:app", "--reload")
    assert wait_watching(server) == 1, "ignored trees got watches"

    for i in range(50):
        target = (venv_file, nm_file, nm_env)[i % 3] if i % 2 else venv_file
        target.write_text(f"x = {i}\n")
        if i % 10 == 0:  # new files and directories inside the ignored trees too
            extra = tmp_path / "node_modules" / f"pkg{i}"
            extra.mkdir()
            (extra / "index.py").write_text("y = 1\n")

    # Liveness proof: one real edit gives exactly one reload, naming only app.py.
    poller = Poller(server)
    try:
        save_and_time(server, poller, app, plain_app("after"), "after", "after 50 ignored edits")
        server.wait_for(r"Reloaded: generation 2 ready", 10)
    finally:
        poller.close()
    detected = [line for line in server.lines if "Change detected" in line]
    assert len(detected) == 1, detected
    assert re.search(r"Change detected in app\.py: reloading$", detected[0]), detected
    assert count(server, r"Serving generation \d+") == 2


# --- failed reload keeps the old generation ------------------------------------------------------


def test_syntax_error_keeps_old_response_then_fix_serves_new(
        tmp_path: Path, start_server: ServerFactory) -> None:
    app = tmp_path / "app.py"
    app.write_text(plain_app("good v1"))
    server = start_server("app:app", "--reload")
    wait_watching(server)
    poller = Poller(server)
    try:
        mark = len(server.lines)
        broken = plain_app("good v1").replace("MESSAGE = 'good v1'", "MESSAGE = 'unterminated")
        app.write_text(broken)
        line_no = broken.splitlines().index("MESSAGE = 'unterminated") + 1
        def failure_logged() -> bool:
            if any("Reload failed" in line for line in list(server.lines[mark:])):
                return True
            assert poller.get() == "good v1"  # the old generation serves the whole time
            return False

        wait_until(failure_logged, 15, "a failure logged", interval=POLL,
                   detail=lambda: server.output)
        failed = server.wait_for(r"Reload failed, generation 1 keeps serving: (.*)", 1,
                                 start=mark)
        assert "SyntaxError" in failed.group(1), failed.group(0)
        assert f"({app}:{line_no})" in failed.group(1), failed.group(0)
        # The user's part of the traceback follows: file, line, the source and the caret.
        server.wait_for(rf'File "{re.escape(str(app))}", line {line_no}', 5, start=mark)
        server.wait_for(r"^\s*MESSAGE = 'unterminated$", 5, start=mark)
        server.wait_for(r"^SyntaxError: unterminated string literal", 5, start=mark)
        for _ in range(20):
            assert poller.get() == "good v1"

        mark = len(server.lines)
        save_and_time(server, poller, app, plain_app("fixed v2"), "fixed v2", "after the fix")
        server.wait_for(r"Serving generation 2 with", 10, start=mark)
        server.wait_for(r"Reloaded: generation 2 ready", 10, start=mark)
        assert poller.failures == [], poller.failures
    finally:
        poller.close()


# --- packages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["pkg:app", "main:app"])
def test_package_submodule_edit_takes_effect(tmp_path: Path, start_server: ServerFactory,
                                             target: str) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    routes = pkg / "routes.py"
    routes.write_text("def message():\n    return 'routes v1'\n")
    handler = textwrap.dedent("""
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": message().encode()})
    """)
    if target == "pkg:app":
        (pkg / "__init__.py").write_text("from pkg.routes import message\n" + handler)
    else:
        (pkg / "__init__.py").write_text("from pkg.routes import message\n")
        (tmp_path / "main.py").write_text("from pkg import message\n" + handler)
    server = start_server(target, "--reload", "--lifespan", "off")
    assert wait_watching(server) == 2
    poller = Poller(server)
    try:
        assert poller.get() == "routes v1"
        save_and_time(server, poller, routes, "def message():\n    return 'routes v2'\n",
                      "routes v2", f"submodule of {target}")
        server.wait_for(r"Change detected in pkg/routes\.py: reloading", 5)
        routes.write_text("def message():\n    return 'routes v3'\n")
        poller.until("routes v3", server=server)
    finally:
        poller.close()


# --- long-lived streams --------------------------------------------------------------------------


class SSEReader(threading.Thread):
    """Holds one streaming GET open; records the first chunk and when the stream ended."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.first = threading.Event()
        self.first_chunk = b""
        self.ended_at: float | None = None
        self.end_reason = ""

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=httpx.Timeout(10.0)) as r:
                for chunk in r.iter_raw():
                    if not self.first.is_set():
                        self.first_chunk = chunk
                        self.first.set()
            self.end_reason = "closed cleanly"
        except httpx.HTTPError as exc:
            self.end_reason = f"{type(exc).__name__}: {exc}"
        finally:
            self.ended_at = time.monotonic()
            self.first.set()


@pytest.mark.parametrize("flavour", ["asgi", "starlette"])
def test_open_sse_stream_does_not_delay_reload(tmp_path: Path, start_server: ServerFactory,
                                               flavour: str) -> None:
    if flavour == "asgi":
        app = tmp_path / "app.py"
        app.write_text(plain_app("stream v1"))
        target, before, after = "app:app", "stream v1", "stream v2"
        edited = plain_app("stream v2")
    else:
        app = tmp_path / "starlette_app.py"
        shutil.copy(EXAMPLES / "starlette_app.py", app)
        target, before, after = "starlette_app:app", "Hello from Starlette", "Edited Starlette"
        edited = app.read_text().replace('PlainTextResponse("Hello from Starlette")',
                                         'PlainTextResponse("Edited Starlette")')
    grace = 1.0
    server = start_server(target, "--reload", "--reload-grace", str(grace))
    wait_watching(server)
    reader = SSEReader(server.url + "/sse")
    reader.start()
    assert reader.first.wait(10), "the SSE stream never started"
    assert reader.ended_at is None, reader.end_reason
    assert reader.first_chunk.startswith(b"data: ")

    poller = Poller(server)
    try:
        assert poller.get() == before
        mark = len(server.lines)
        start = time.monotonic()
        elapsed = save_and_time(server, poller, app, edited, after, f"with open SSE ({flavour})")
        reloaded = server.wait_for(
            r"Reloaded: generation 2 ready in (\d+) ms \(.*\), previous drained in (\d+) ms",
            grace + 5, start=mark)
        reloaded_after = time.monotonic() - start
    finally:
        poller.close()
    drained_ms = int(reloaded.group(2))
    print(f"\n[sse] new code served after {elapsed * 1000:.0f} ms; previous generation drained "
          f"in {drained_ms} ms (grace {grace * 1000:.0f} ms); stream end: {reader.end_reason}")
    # The new code is served before the old generation's grace could even have run out.
    assert elapsed < grace, elapsed
    reader.join(5)
    assert not reader.is_alive(), "the old generation's SSE stream was never closed"
    assert reader.ended_at is not None and reader.ended_at - start < grace + 3.0
    # The drain is bounded by the grace, not by the endless stream: once the grace is up the
    # stream is force-closed and the app's next send() fails, so the previous generation is
    # gone within grace + the app's tick (0.05 s here, 0.5 s in the Starlette example) + 0.3 s.
    tick = 0.05 if flavour == "asgi" else 0.5
    assert drained_ms < (grace + tick + 0.3) * 1000, reloaded.group(0)
    assert reloaded_after < grace + 1.0, reloaded_after


# --- new directories, .env, process mode ---------------------------------------------------------


def test_directory_created_after_start_is_watched(tmp_path: Path,
                                                  start_server: ServerFactory) -> None:
    app = tmp_path / "app.py"
    app.write_text(plain_app("no feature", extra=textwrap.dedent("""
        try:
            from feature.data import TEXT
        except ImportError:
            TEXT = None
    """)).replace("MESSAGE = 'no feature'", "MESSAGE = TEXT or 'no feature'"))
    server = start_server("app:app", "--reload")
    assert wait_watching(server) == 1
    poller = Poller(server)
    try:
        assert poller.get() == "no feature"
        mark = len(server.lines)
        feature = tmp_path / "feature"
        feature.mkdir()
        data = feature / "data.py"
        data.write_text("TEXT = 'feature v1'\n")
        server.wait_for(r"Change detected in feature/data\.py", 10, start=mark)
        poller.until("feature v1", server=server)
        server.wait_for(r"Reloaded: generation 2 ready", 10, start=mark)

        # An edit inside the new directory (no file in the root changes) triggers a reload.
        mark = len(server.lines)
        save_and_time(server, poller, data, "TEXT = 'feature v2'\n", "feature v2",
                      "file in a directory created after start")
        server.wait_for(r"Change detected in feature/data\.py", 5, start=mark)
        # And a second level created later still works.
        mark = len(server.lines)
        deeper = feature / "more"
        deeper.mkdir()
        (deeper / "__init__.py").write_text("")
        server.wait_for(r"Change detected in feature/more/__init__\.py", 10, start=mark)
    finally:
        poller.close()


def test_edit_during_a_new_directory_reload_is_not_lost(tmp_path: Path,
                                                        start_server: ServerFactory) -> None:
    """Scaffolding writes files one after another: a new directory triggers a reload, and a save
    that lands while that reload is still draining (an open stream holds generation 1 for the
    grace) must still be picked up afterwards, as it is for any other reload."""
    app = tmp_path / "app.py"
    app.write_text(plain_app("v1"))
    server = start_server("app:app", "--reload", "--reload-grace", "2")
    wait_watching(server)
    reader = SSEReader(server.url + "/sse")
    reader.start()
    assert reader.first.wait(10), "the SSE stream never started"
    poller = Poller(server)
    try:
        mark = len(server.lines)
        (tmp_path / "newdir").mkdir()
        (tmp_path / "newdir" / "notes.py").write_text("x = 1\n")
        server.wait_for(r"Serving generation 2 with", 10, start=mark)
        assert not any("Reloaded: generation 2" in line for line in list(server.lines[mark:])), \
            "generation 1 should still be draining (the SSE stream holds it)"
        app.write_text(plain_app("v2"))  # saved while generation 1 drains
        poller.until("v2", timeout=15, server=server)
        server.wait_for(r"Change detected in app\.py: reloading", 5, start=mark)
    finally:
        poller.close()
        reader.join(10)


def test_env_file_change_is_seen_after_reload(tmp_path: Path,
                                              start_server: ServerFactory) -> None:
    var = "DEVSERVE_TEST_HOT_GREETING"
    env = tmp_path / ".env"
    env.write_text(f"{var}=first value\n")
    app = tmp_path / "app.py"
    app.write_text(plain_app("unused").replace(
        "body = MESSAGE.encode()", f"body = os.environ.get({var!r}, 'unset').encode()"))
    server = start_server("app:app", "--reload", "--env-file", ".env")
    wait_watching(server)
    poller = Poller(server)
    try:
        assert poller.get() == "first value"
        mark = len(server.lines)
        save_and_time(server, poller, env, f"# edited\n{var}=second value\n", "second value",
                      ".env edit")
        server.wait_for(r"Change detected in \.env: reloading", 5, start=mark)
        server.wait_for(r"Reloaded: generation 2 ready", 10, start=mark)
    finally:
        poller.close()


def test_process_mode_edit_serves_new_text(tmp_path: Path, start_server: ServerFactory) -> None:
    app = tmp_path / "app.py"
    app.write_text(plain_app("process v1"))
    server = start_server("app:app", "--reload", "--worker-mode", "process")
    server.wait_for(r"Serving generation 1 with 1 process worker", 5)
    wait_watching(server)
    poller = Poller(server)
    try:
        assert poller.get() == "process v1"
        elapsed = save_and_time(server, poller, app, plain_app("process v2"), "process v2",
                                "process mode")
        assert elapsed < SAVE_TO_SERVE_BOUND
        server.wait_for(r"Serving generation 2 with 1 process worker", 10)
        server.wait_for(r"Reloaded: generation 2 ready", 10)
        mark = len(server.lines)
        broken = tmp_path / "app.py"
        broken.write_text("def broken(:\n")
        server.wait_for(r"Reload failed, generation 2 keeps serving", 15, start=mark)
        assert poller.get() == "process v2"
        assert poller.failures == [], poller.failures
    finally:
        poller.close()
