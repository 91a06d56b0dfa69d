"""A change to devserve's own [tool.devserve] config re-executes devserve with the same
arguments; other pyproject edits only reload the app."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import httpx

from tests.conftest import LISTEN_RE, ServerFactory

APP = textwrap.dedent(
    """
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    """
)


def _project(tmp_path: Path, devserve_table: str) -> None:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0"\n\n[tool.devserve]\n' + devserve_table
    )


def test_tool_devserve_change_reexecs_with_the_new_config(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    _project(tmp_path, 'headers = ["X-Config: one"]\n')
    server = start_server("app:app", "--reload", cwd=tmp_path)
    server.wait_for("Watching for changes")
    pid = server.proc.pid
    first = httpx.get(server.url + "/", timeout=5)
    assert first.headers["x-config"] == "one"

    start = len(server.lines)
    _project(tmp_path, 'headers = ["X-Config: two"]\n')
    server.wait_for(r"\[tool.devserve\] changed", start=start, timeout=15)
    m = server.wait_for(LISTEN_RE, start=start, timeout=20)
    server.wait_for(r"Serving generation 1", start=start, timeout=20)
    url = f"{m.group(1)}://{m.group(2)}:{m.group(3)}"
    second = httpx.get(url + "/", timeout=5)
    assert second.headers["x-config"] == "two"
    assert server.proc.pid == pid  # exec keeps the process (and its supervisor) identity
    assert server.proc.poll() is None


def test_other_pyproject_edits_only_reload(tmp_path: Path, start_server: ServerFactory) -> None:
    _project(tmp_path, 'headers = ["X-Config: one"]\n')
    server = start_server("app:app", "--reload", cwd=tmp_path)
    server.wait_for("Watching for changes")
    start = len(server.lines)
    text = (tmp_path / "pyproject.toml").read_text().replace('version = "0"', 'version = "1"')
    (tmp_path / "pyproject.toml").write_text(text)
    server.wait_for(r"Reloaded: generation 2", start=start, timeout=15)
    assert not any(re.search(r"tool.devserve\] changed", line) for line in server.lines[start:])
    assert httpx.get(server.url + "/", timeout=5).headers["x-config"] == "one"
