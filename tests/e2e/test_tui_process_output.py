"""Process-mode workers under the dashboard: what they print appears above the live view
(relayed by the Supervisor) instead of being written over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_tui import TuiSession, app_source, current_frame, request_rows, worker_rows


@pytest.fixture
def tui(tmp_path: Path) -> Iterator[TuiSession]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_text(app_source("v1"))
    session = TuiSession(project)
    try:
        yield session
    finally:
        session.close()


def test_process_worker_output_appears_above_the_view(tui: TuiSession) -> None:
    tui.start("--worker-mode", "process")
    frame = tui.wait_ready()
    assert worker_rows(frame)[0][2].startswith("pid ")  # a real child process
    assert tui.get("/print/p1").text == "v1"

    def printed_above(screen: str) -> list[str] | None:
        lines = screen.split("\n")
        top = next((i for i, line in enumerate(lines) if line.startswith("╭")), None)
        above = "\n".join(lines[:top]) if top is not None else ""
        ok = "APP-STDOUT p1" in above and "APP-STDERR p1" in above
        return current_frame(screen) if ok else None

    frame = tui.wait("the worker's stdout and stderr above the dashboard", printed_above)
    # The dashboard is intact below the output, and the request is in its panel (not in a
    # scrolled access-log line).
    tui.wait_frame("the request in the requests panel",
                   lambda f: any("/print/p1" in " ".join(r) for r in request_rows(f)))
    assert '"GET /print/p1 HTTP/1.1"' not in tui.screen()
