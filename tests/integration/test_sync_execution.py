"""``--execution sync``: ASGI apps served on SyncWorker threads, each request's cycle on a
per-thread event loop, lifespan on the AsyncPool. The Starlette example must behave exactly as
under the async workers (text, JSON with lifespan state, streamed upload, SSE)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import APPS, ServerFactory, ServerProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 10.0


@pytest.fixture(scope="module", params=["thread", "process"])
def starlette(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[httpx.Client]:
    server = ServerProcess(["starlette_app:app", "--app-dir", str(EXAMPLES), "--port", "0",
                            "--execution", "sync", "--worker-mode", request.param,
                            "--threads", "4", "--timeout-graceful-shutdown", "2"],
                           tmp_path_factory.mktemp("sync"))
    try:
        server.wait_ready(30)
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
            yield client
    finally:
        assert server.stop() == 0, server.output


def test_starlette_text_and_lifespan_state(starlette: httpx.Client) -> None:
    r = starlette.get("/")
    assert (r.status_code, r.text) == (200, "Hello from Starlette")
    data = starlette.get("/json").json()  # reads request.state filled by the lifespan
    assert data["message"] == "Hello from Starlette"
    assert 0 <= data["uptime_s"] < 600


def test_starlette_upload_streams_in(starlette: httpx.Client) -> None:
    body = bytes(range(256)) * 4096
    assert starlette.post("/upload", content=body).json() == {"bytes": len(body)}

    def chunks() -> Iterator[bytes]:
        for _ in range(16):
            yield b"z" * 65536

    assert starlette.post("/upload", content=chunks()).json() == {"bytes": 16 * 65536}


def test_starlette_sse_then_leave(starlette: httpx.Client) -> None:
    events: list[str] = []
    with starlette.stream("GET", "/sse") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line)
            if len(events) == 2:
                break
    assert events == ["data: tick 0", "data: tick 1"]
    assert starlette.get("/").status_code == 200


def test_requests_run_on_sync_threads_and_lifespan_runs_once(start_server: ServerFactory,
                                                             tmp_path: Path) -> None:
    log = tmp_path / "lifespan.log"
    server = start_server("wsgi_sync_asgi:app", "--app-dir", str(APPS), "--execution", "sync",
                          "--worker-mode", "thread", "--workers", "2", "--threads", "3",
                          "--lifespan", "on", env={"LIFESPAN_LOG": str(log)})
    threads = set()
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        for _ in range(20):
            data = json.loads(client.post("/", content=b"x" * 100).text)
            assert data["state"] == {"answer": 42}
            assert data["body"] == 100
            threads.add(data["thread"])
    assert all(t.startswith("devserve-g1-w") and "-t" in t for t in threads), threads
    assert log.read_text() == "startup\n"
    assert server.stop() == 0
    assert log.read_text() == "startup\nshutdown\n"


@pytest.mark.parametrize("execution", ["async", "sync"])
def test_django_asgi_application(start_server: ServerFactory, execution: str) -> None:
    project = EXAMPLES / "django_project"
    server = start_server("mysite.asgi:application", "--app-dir", str(project), "--execution",
                          execution, "--worker-mode", "thread")
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        assert client.get("/").text == "Hello from Django"
        assert client.post("/form", data={"a": "1"}).json() == {"a": "1"}
        assert client.post("/json", json=[1, 2]).json() == {"received": [1, 2]}
        assert client.get("/stream", params={"count": 3}).text == "chunk 0\nchunk 1\nchunk 2\n"
        assert client.get("/file").content == (project / "mysite" / "views.py").read_bytes()
