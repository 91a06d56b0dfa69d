"""``python -m devserve`` as a real subprocess: every user error ends in one ``devserve: error:``
line on stderr (no traceback) and the documented exit code."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20


def run_devserve(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in *cwd* with a clean DEVSERVE_* environment; never hangs past TIMEOUT."""
    full_env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("DEVSERVE_") and k != "FORWARDED_ALLOW_IPS"
    }
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env["DEVSERVE_TUI"] = "off"
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "devserve", *args],
        cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=TIMEOUT,
    )


def only_line(result: subprocess.CompletedProcess[str]) -> str:
    """stderr must be exactly one ``devserve: error:`` line (config errors happen before any
    server output)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("devserve: error: "), result.stderr
    return lines[0]


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``devserve: error:`` line among whatever the server logged first; no
    traceback anywhere."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.startswith("devserve: error:")]
    assert len(lines) == 1, output
    return lines[0]


# --- configuration errors: decided before the server is imported ------------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [(["main:app", "--port", "abc"], "--port"), (["main:app", "--workers", "0"], "--workers"),
     (["main:app", "--port", "65536"], "--port"),
     (["main:app", "--forwarded-allow-ips", "not-an-ip"], "--forwarded-allow-ips")],
)
def test_bad_flag_value(tmp_path: Path, args: list[str], option: str) -> None:
    result = run_devserve(tmp_path, *args)
    assert result.returncode == 2
    line = only_line(result)
    assert option in line and "command line" in line
    assert result.stdout == ""


def test_argparse_choice_error(tmp_path: Path) -> None:
    result = run_devserve(tmp_path, "main:app", "--loop", "trio")
    assert result.returncode == 2
    last = result.stderr.splitlines()[-1]
    assert last.startswith("devserve: error:") and "--loop" in last


def test_bad_env_var(tmp_path: Path) -> None:
    result = run_devserve(tmp_path, "main:app", env={"DEVSERVE_PORT": "notanint"})
    assert result.returncode == 2
    assert "environment variable DEVSERVE_PORT" in only_line(result)


def test_bad_pyproject_value_names_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.devserve]\ntimeout-keep-alive = -1\n")
    result = run_devserve(tmp_path, "main:app")
    assert result.returncode == 2
    line = only_line(result)
    assert "--timeout-keep-alive" in line and str(tmp_path / "pyproject.toml") in line


def test_missing_app(tmp_path: Path) -> None:
    result = run_devserve(tmp_path)
    assert result.returncode == 2
    line = only_line(result)
    assert "APP" in line and "module:attribute" in line


def test_version(tmp_path: Path) -> None:
    result = run_devserve(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.startswith("devserve ") and result.stderr == ""


# --- errors found by the server (need devserve.server) ----------------------------------------

APP_SOURCE = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def test_app_module_not_found(tmp_path: Path) -> None:
    result = run_devserve(tmp_path, "nosuchmodule:app", "--port", "0")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "nosuchmodule" in error_line(result)


def test_app_attribute_typo_suggests_name(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text(APP_SOURCE)
    result = run_devserve(tmp_path, "mod:apq", "--port", "0")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "did you mean 'app'" in error_line(result)


def test_port_in_use(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text(APP_SOURCE)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_devserve(tmp_path, "mod:app", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1, result.stdout + result.stderr
    assert str(port) in error_line(result)
