"""ASGI lifespan through the real server: state in requests, startup failures, --lifespan modes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ServerFactory, ServerProcess

TIMEOUT = 5.0
FAILURE_MESSAGE = "database unreachable at db.invalid:5432"  # tests/apps/lifespan_apps.py


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(["echo_app:app", "--port", "0"], tmp_path_factory.mktemp("server"))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        yield c


def test_startup_ran_before_serving(client: httpx.Client) -> None:
    assert client.get("/lifespan").json() == {"messages": ["lifespan.startup"]}


def test_lifespan_state_visible_in_requests(client: httpx.Client) -> None:
    scope = client.get("/scope").json()
    assert scope["has_state"] is True
    assert scope["state"]["started"] == "yes"
    assert isinstance(scope["state"]["pid"], int)


def test_state_changes_in_one_request_do_not_leak_into_the_next(client: httpx.Client) -> None:
    assert client.get("/mutate-state").status_code == 200
    state = client.get("/scope").json()["state"]
    assert state["started"] == "yes"
    assert "mutated" not in state


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_startup_failure_exits_4_with_a_clear_line(start_server: ServerFactory,
                                                   mode: str) -> None:
    server = start_server("lifespan_apps:failing_startup", "--worker-mode", mode, ready=False)
    assert server.wait_exit() == 4
    output = server.output
    errors = [line for line in server.lines if line.startswith("devserve: error:")]
    assert len(errors) == 1, output
    assert "lifespan" in errors[0] and FAILURE_MESSAGE in errors[0], output
    assert "Serving generation" not in output


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_startup_failure_message_has_no_internal_traceback(start_server: ServerFactory,
                                                           mode: str) -> None:
    """The app reported the failure in a message: no exception was raised by the app, so a
    traceback (of devserve's own LifespanFailed) only buries the one line that matters."""
    server = start_server("lifespan_apps:failing_startup", "--worker-mode", mode, ready=False)
    assert server.wait_exit() == 4
    assert "Traceback" not in server.output, server.output


def test_startup_exception_with_lifespan_on_exits_4(start_server: ServerFactory) -> None:
    server = start_server("lifespan_apps:raising_startup", "--lifespan", "on", ready=False)
    assert server.wait_exit() == 4
    output = server.output
    errors = [line for line in server.lines if line.startswith("devserve: error:")]
    assert len(errors) == 1, output
    assert "cannot open the connection pool" in errors[0]
    assert "lifespan_apps.py" in output  # the app's own traceback is shown, it is the clue
    assert "Serving generation" not in output


def test_lifespan_on_with_an_app_without_lifespan_exits_4(start_server: ServerFactory) -> None:
    server = start_server("lifespan_apps:no_lifespan", "--lifespan", "on", ready=False)
    assert server.wait_exit() == 4
    assert any(line.startswith("devserve: error:") and "lifespan" in line
               for line in server.lines), server.output


def test_lifespan_auto_tolerates_an_app_that_raises(start_server: ServerFactory) -> None:
    server = start_server("lifespan_apps:no_lifespan", "--lifespan", "auto")
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        r = c.get("/")
    assert (r.status_code, r.text) == (200, "ok")
    server.wait_for(r"lifespan' protocol appears unsupported")
    assert server.stop() == 0


def test_lifespan_off_never_calls_lifespan(start_server: ServerFactory, tmp_path: Path) -> None:
    marker = tmp_path / "shutdown-marker"
    server = start_server("echo_app:app", "--lifespan", "off",
                          env={"ECHO_APP_SHUTDOWN_MARKER": str(marker)})
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        assert c.get("/lifespan").json() == {"messages": []}
        state = c.get("/scope").json()["state"]
    assert not state  # absent or empty: startup never filled it
    assert server.stop() == 0
    assert not marker.exists(), "lifespan shutdown ran with --lifespan off"


def test_lifespan_shutdown_runs_on_stop(start_server: ServerFactory, tmp_path: Path) -> None:
    marker = tmp_path / "shutdown-marker"
    server = start_server("echo_app:app", env={"ECHO_APP_SHUTDOWN_MARKER": str(marker)})
    assert not marker.exists()
    assert server.stop() == 0
    assert marker.read_text() == "shutdown"
