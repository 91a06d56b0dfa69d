"""Debugging under ``--reload``: pdb in a request handler works on a real terminal (a pseudo-
terminal from pexpect), before and after a hot reload. Also: the IDE run configurations in
examples/ide/ start exactly the server their README describes."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import textwrap
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pexpect
import pytest
from conftest import ROOT, ServerProcess

WAIT = 20.0


def handler_source(message: str) -> str:
    return textwrap.dedent(f"""
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            secret_value = "secret-" + {message!r}
            breakpoint()
            body = ("answer " + {message!r}).encode()
            await send({{"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]}})
            await send({{"type": "http.response.body", "body": body}})
    """)


class Request(threading.Thread):
    """One GET in a thread: the handler stops in pdb, so the request blocks until ``c``."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.response = httpx.get(self.url, timeout=60.0)
        except BaseException as exc:
            self.error = exc

    def result(self, timeout: float = WAIT) -> httpx.Response:
        self.join(timeout)
        assert not self.is_alive(), "the request never completed"
        assert self.error is None, self.error
        assert self.response is not None
        return self.response


def debug_round(child: pexpect.spawn, url: str, version: str) -> None:
    """Request → (Pdb) prompt → print a local → continue → the response arrives."""
    request = Request(url)
    child.expect(r"\(Pdb\) ", timeout=WAIT)
    child.sendline("p secret_value")
    child.expect(re.escape(f"'secret-{version}'"), timeout=WAIT)
    child.expect(r"\(Pdb\) ", timeout=WAIT)
    child.sendline("c")
    response = request.result()
    assert response.status_code == 200
    assert response.text == f"answer {version}"


def test_pdb_breakpoint_survives_a_reload(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(handler_source("one"))
    env = dict(os.environ)
    env.update({
        "PYTHONBREAKPOINT": "pdb.set_trace",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        "TERM": "dumb",
    })
    env.pop("PYTHONINSPECT", None)
    child = pexpect.spawn(
        sys.executable, ["-m", "devserve", "--reload", "app:app", "--port", "0", "--tui", "off"],
        cwd=str(tmp_path), env=env, encoding="utf-8", codec_errors="replace", timeout=WAIT,
        dimensions=(50, 200),
    )
    try:
        child.expect(r"Listening on http://127\.0\.0\.1:(\d+)")
        url = f"http://127.0.0.1:{child.match.group(1)}/"
        child.expect(r"Watching for changes in \d+ director")
        child.expect(r"Serving generation 1 with")

        debug_round(child, url, "one")

        # Edit the handler (the breakpoint stays) and wait for the new generation.
        app.write_text(handler_source("two"))
        child.expect(r"Change detected in app\.py: reloading")
        child.expect(r"Reloaded: generation 2 ready")

        debug_round(child, url, "two")

        # A clean exit: Ctrl+C on the terminal, like a developer would.
        child.sendintr()
        child.expect(r"Finished server process", timeout=WAIT)
        child.expect(pexpect.EOF, timeout=WAIT)
        child.close()
        assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)
    finally:
        if child.isalive():
            child.terminate(force=True)


# --- IDE run configurations -----------------------------------------------------------------------

IDE = ROOT / "examples" / "ide"
EXPECTED_ARGS = ["--reload", "hello:app", "--app-dir", "examples"]


def _launch_configs() -> list[dict[str, object]]:
    data = json.loads((IDE / "launch.json").read_text())
    configs: list[dict[str, object]] = data["configurations"]
    return configs


def test_vscode_launch_json_runs_devserve_module() -> None:
    configs = _launch_configs()
    main = configs[0]
    assert main["type"] == "debugpy" and main["request"] == "launch"
    assert main["module"] == "devserve"
    assert main["args"] == EXPECTED_ARGS
    assert main["cwd"] == "${workspaceFolder}"
    assert "program" not in main  # module mode: the same entry point as `python -m devserve`


def test_pycharm_run_configuration_runs_devserve_module() -> None:
    root = ET.parse(IDE / "devserve_reload.run.xml").getroot()
    assert root.tag == "component" and root.get("name") == "ProjectRunConfigurationManager"
    config = root.find("configuration")
    assert config is not None and config.get("type") == "PythonConfigurationType"
    options = {o.get("name"): o.get("value") for o in config.findall("option")}
    assert options["MODULE_MODE"] == "true"
    assert options["SCRIPT_NAME"] == "devserve"
    assert shlex.split(options["PARAMETERS"] or "") == EXPECTED_ARGS
    assert options["WORKING_DIRECTORY"] == "$PROJECT_DIR$"


@pytest.mark.parametrize("source", ["launch.json", "devserve_reload.run.xml"])
def test_ide_configuration_starts_a_reloading_server(source: str) -> None:
    """What the IDE runs (``python -m devserve <args>`` in the project root) really serves
    examples/hello.py with reload on. ``--port 0`` is appended only to avoid port clashes."""
    if source == "launch.json":
        config = _launch_configs()[0]
        module, args = str(config["module"]), [str(a) for a in config["args"]]  # type: ignore[union-attr]
        env_extra = {str(k): str(v) for k, v in dict(config.get("env", {})).items()}  # type: ignore[call-overload]
    else:
        config_el = ET.parse(IDE / source).getroot().find("configuration")
        assert config_el is not None
        options = {o.get("name"): o.get("value") for o in config_el.findall("option")}
        module, args = str(options["SCRIPT_NAME"]), shlex.split(options["PARAMETERS"] or "")
        envs = config_el.find("envs")
        env_extra = {e.get("name") or "": e.get("value") or ""
                     for e in (envs.findall("env") if envs is not None else [])}
    assert module == "devserve"
    server = ServerProcess([*args, "--port", "0"], ROOT, env_extra)
    try:
        server.wait_ready()
        server.wait_for(r"Watching for changes in \d+ director(?:y|ies) under examples", WAIT)
        r = httpx.get(server.url + "/", timeout=WAIT)
        assert r.status_code == 200 and r.text == "Hello, world!"
    finally:
        assert server.stop() == 0, server.output


def test_ide_readme_documents_both_files() -> None:
    text = (IDE / "README.md").read_text()
    assert "launch.json" in text and "devserve_reload.run.xml" in text
    assert "devserve --reload hello:app --app-dir examples" in text

