"""cli.main in-process: --version/--help, flag → override mapping, and error → exit code + one
line on stderr. Paths that reach the server are covered by tests/integration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devserve.cli import build_parser, main, version
from devserve.config import Config, field_types, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """main() reads os.environ and the cwd's pyproject: give it a clean slate."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("DEVSERVE_") or name == "FORWARDED_ALLOW_IPS":
            monkeypatch.delenv(name)


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("devserve: error: ")
    assert captured.out == ""
    return lines[0]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out == f"devserve {version()}\n"
    assert out.startswith("devserve 0.")


def test_help_shows_config_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: devserve" in out
    assert f"(default: {Config.port})" in out
    assert "--no-access-log" in out and "--forwarded-allow-ips" in out


def test_only_given_flags_become_overrides() -> None:
    parser = build_parser()
    assert vars(parser.parse_args([])) == {}
    ns = vars(parser.parse_args([
        "main:app", "--port", "9000", "--no-access-log", "--header", "A: 1", "--header", "B: 2",
        "--factory", "--use-colors", "--forwarded-allow-ips", "1.2.3.4,::1",
    ]))
    assert ns == {
        "app": "main:app", "port": "9000", "access_log": False, "headers": ["A: 1", "B: 2"],
        "factory": True, "use_colors": True, "forwarded_allow_ips": "1.2.3.4,::1",
    }


def test_every_flag_maps_to_a_config_field() -> None:
    dests = {a.dest for a in build_parser()._actions if a.dest not in ("help", "version")}
    assert dests == set(field_types())


def test_parsed_flags_load_into_config(tmp_path: Path) -> None:
    args = ["pkg.mod:app", "--host", "0.0.0.0", "--port", "0", "--workers", "2",
            "--worker-mode", "process", "--limit-request-body", "0", "--timeout-keep-alive",
            "1.5", "--no-server-header", "--header", "X-A: b", "--root-path", "/api"]
    config = load_config(vars(build_parser().parse_args(args)), environ={}, cwd=tmp_path)
    assert config == Config(
        app="pkg.mod:app", host="0.0.0.0", port=0, workers=2, worker_mode="process",
        limit_request_body=None, timeout_keep_alive=1.5, server_header=False,
        headers=(("X-A", "b"),), root_path="/api",
    )


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["main:app", "--port", "abc"], "invalid value for --port (from command line)"),
        (["main:app", "--workers", "0"], "invalid value for --workers (from command line)"),
        (["main:app", "--header", "nocolon"], "invalid value for --header"),
        (["main:app", "--ssl-keyfile", "k.pem"], "requires --ssl-certfile"),
        (["main"], "expected 'module:attribute'"),
        ([], "invalid value for APP: no application given (hint: pass it as"),
    ],
)
def test_config_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    assert main(argv) == 2
    assert fragment in error_line(capsys)


def test_env_error_names_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVSERVE_PORT", "notanint")
    assert main(["main:app"]) == 2
    assert "environment variable DEVSERVE_PORT" in error_line(capsys)


def test_pyproject_error_names_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.devserve]\nbogus = 1\n")
    assert main(["main:app"]) == 2
    line = error_line(capsys)
    assert "bogus" in line and str(tmp_path / "pyproject.toml") in line


def test_app_from_pyproject_satisfies_positional(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # With the app supplied by pyproject the only remaining error is the bad port.
    (tmp_path / "pyproject.toml").write_text("[tool.devserve]\napp = 'main:app'\n")
    assert main(["--port", "70000"]) == 2
    assert "--port" in error_line(capsys)


@pytest.mark.parametrize(
    "argv", [["main:app", "--loop", "trio"], ["main:app", "--no-such-flag"], ["a:b", "c:d"]]
)
def test_argparse_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: devserve")
    assert err.splitlines()[-1].startswith("devserve: error: ")


def test_importing_the_cli_starts_nothing() -> None:
    """The CLI composes the server at import (no function-local imports, so it is no longer
    light): importing it must still start nothing — no threads, no signal handlers."""
    code = (
        "import signal, threading, devserve.cli\n"
        "handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]\n"
        "print(threading.active_count(), handlers == [signal.default_int_handler, signal.SIG_DFL])"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=20, check=True).stdout
    assert out.split() == ["1", "True"]
