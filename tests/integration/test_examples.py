"""The example apps (examples/*.py) answer real requests through the real server, started the
way the README says: ``devserve <module>:app --app-dir <repo>/examples``."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ServerProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 10.0


def example_server(tmp_path_factory: pytest.TempPathFactory, app: str, *args: str
                   ) -> Iterator[httpx.Client]:
    server = ServerProcess([app, "--app-dir", str(EXAMPLES), "--port", "0", *args],
                           tmp_path_factory.mktemp("example"))
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
            yield client
    finally:
        code = server.stop()
    assert code == 0, server.output
    assert "Traceback" not in server.output, server.output


# --- hello.py -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    yield from example_server(tmp_path_factory, "hello:app", "--lifespan", "on")


def test_hello_any_path(hello: httpx.Client) -> None:
    for path in ("/", "/some/where?x=1"):
        r = hello.get(path)
        assert r.status_code == 200
        assert r.text == "Hello, world!"
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.headers["content-length"] == "13"


def test_hello_health(hello: httpx.Client) -> None:
    assert hello.get("/health").text == "ok"


def test_hello_post_body_ignored(hello: httpx.Client) -> None:
    r = hello.post("/", content=b"x" * 100_000)
    assert (r.status_code, r.text) == (200, "Hello, world!")
    assert hello.get("/").status_code == 200  # the connection is still usable


def test_hello_head(hello: httpx.Client) -> None:
    r = hello.head("/")
    assert r.status_code == 200
    assert r.headers["content-length"] == "13"
    assert r.content == b""


# --- fastapi_app.py -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fastapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    yield from example_server(tmp_path_factory, "fastapi_app:app")


def test_fastapi_root(fastapi: httpx.Client) -> None:
    r = fastapi.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"message": "Hello from FastAPI"}


def test_fastapi_path_and_query_params(fastapi: httpx.Client) -> None:
    assert fastapi.get("/items/42", params={"q": "hi there"}).json() == {
        "item_id": 42, "q": "hi there"}
    assert fastapi.get("/items/7").json() == {"item_id": 7, "q": None}
    assert fastapi.get("/items/not-a-number").status_code == 422


def test_fastapi_post_json(fastapi: httpx.Client) -> None:
    payload = {"a": 1, "nested": {"list": [1, 2, 3], "text": "héllo"}}
    r = fastapi.post("/echo", json=payload)
    assert r.status_code == 200
    assert r.json() == payload
    assert fastapi.post("/echo", content=b"{not json",
                        headers={"content-type": "application/json"}).status_code == 422


def test_fastapi_lifespan_state(fastapi: httpx.Client) -> None:
    r = fastapi.get("/state")
    assert r.status_code == 200
    data = r.json()
    assert data["greeting"] == "state from lifespan"
    assert 0 <= data["uptime_s"] < 600


def test_fastapi_streaming(fastapi: httpx.Client) -> None:
    arrivals: list[float] = []
    chunks: list[str] = []
    with fastapi.stream("GET", "/stream", params={"count": 5}) as r:
        assert r.status_code == 200
        assert r.headers.get("transfer-encoding") == "chunked"
        for text in r.iter_text():
            arrivals.append(time.monotonic())
            chunks.append(text)
    assert "".join(chunks) == "".join(f"chunk {i}\n" for i in range(5))
    # The parts were produced 50 ms apart and must not have been buffered into one write.
    assert len(chunks) >= 3
    assert arrivals[-1] - arrivals[0] >= 0.1


def test_fastapi_404(fastapi: httpx.Client) -> None:
    assert fastapi.get("/nope").status_code == 404


# --- starlette_app.py ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def starlette(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    # A short grace: an open SSE stream must not hold up the teardown of this module.
    yield from example_server(tmp_path_factory, "starlette_app:app",
                              "--timeout-graceful-shutdown", "2")


def test_starlette_text(starlette: httpx.Client) -> None:
    r = starlette.get("/")
    assert r.status_code == 200
    assert r.text == "Hello from Starlette"


def test_starlette_json_with_lifespan_state(starlette: httpx.Client) -> None:
    data = starlette.get("/json").json()
    assert data["message"] == "Hello from Starlette"
    assert 0 <= data["uptime_s"] < 600


def test_starlette_upload(starlette: httpx.Client) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    assert starlette.post("/upload", content=body).json() == {"bytes": len(body)}

    def chunks() -> Iterator[bytes]:
        for _ in range(16):
            yield b"z" * 65536

    assert starlette.post("/upload", content=chunks()).json() == {"bytes": 16 * 65536}


def test_starlette_sse_stream(starlette: httpx.Client) -> None:
    events: list[str] = []
    with starlette.stream("GET", "/sse") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line)
            if len(events) == 2:
                break
    assert events == ["data: tick 0", "data: tick 1"]
    assert starlette.get("/").status_code == 200


def test_leaving_an_sse_stream_does_not_keep_the_server_busy(tmp_path: Path) -> None:
    """Once the client left the endless stream nothing is in flight, so SIGTERM stops the
    server at once instead of waiting out --timeout-graceful-shutdown (30 s)."""
    server = ServerProcess(["starlette_app:app", "--app-dir", str(EXAMPLES), "--port", "0"],
                           tmp_path)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
            with client.stream("GET", "/sse") as r:
                for line in r.iter_lines():
                    if line.startswith("data: tick 1"):
                        break
            assert client.get("/").status_code == 200
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait_exit(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 5 s after SIGTERM:\n{server.output}")
        assert code == 0
    finally:
        if server.proc.poll() is None:  # failed: kill it and its worker processes (by pid)
            for pid in [*descendants(server.proc.pid), server.proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            server.proc.wait(5)


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
