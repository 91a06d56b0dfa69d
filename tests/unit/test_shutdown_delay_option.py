"""``--shutdown-delay SECONDS``: every source (flag, ``DEVSERVE_SHUTDOWN_DELAY``,
``[tool.devserve]`` with either spelling), the default, and the one-line error for a negative or
non-numeric value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devserve.cli import build_parser, main
from devserve.config import Config, load_config
from devserve.errors import EXIT_USAGE, ConfigError

APP = {"app": "main:app"}


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """main() reads os.environ and the cwd's pyproject: give it a clean slate."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("DEVSERVE_"):
            monkeypatch.delenv(name)


def test_default_is_no_delay(tmp_path: Path) -> None:
    assert Config.shutdown_delay == 0.0
    assert load_config(APP, environ={}, cwd=tmp_path).shutdown_delay == 0.0


def test_flag(tmp_path: Path) -> None:
    overrides = vars(build_parser().parse_args(["main:app", "--shutdown-delay", "5"]))
    assert overrides["shutdown_delay"] == "5"
    assert load_config(overrides, environ={}, cwd=tmp_path).shutdown_delay == 5.0


def test_environment_variable(tmp_path: Path) -> None:
    config = load_config(APP, environ={"DEVSERVE_SHUTDOWN_DELAY": "2.5"}, cwd=tmp_path)
    assert config.shutdown_delay == 2.5


@pytest.mark.parametrize("key", ["shutdown-delay", "shutdown_delay"])
def test_pyproject(tmp_path: Path, key: str) -> None:
    (tmp_path / "pyproject.toml").write_text(f"[tool.devserve]\n{key} = 3\n", encoding="utf-8")
    assert load_config(APP, environ={}, cwd=tmp_path).shutdown_delay == 3.0


def test_precedence_flag_over_environment_over_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.devserve]\nshutdown-delay = 3\n",
                                             encoding="utf-8")
    environ = {"DEVSERVE_SHUTDOWN_DELAY": "4"}
    assert load_config(APP, environ=environ, cwd=tmp_path).shutdown_delay == 4.0
    overrides = {**APP, "shutdown_delay": "1"}
    assert load_config(overrides, environ=environ, cwd=tmp_path).shutdown_delay == 1.0


def test_zero_is_accepted(tmp_path: Path) -> None:
    assert load_config({**APP, "shutdown_delay": "0"}, environ={}, cwd=tmp_path
                       ).shutdown_delay == 0.0


@pytest.mark.parametrize(("value", "fragment"), [
    ("-1", "must be at least 0, got -1.0"),
    ("soon", "expected a number, got 'soon'"),
    ("inf", "expected a number"),
])
def test_invalid_values(tmp_path: Path, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({**APP, "shutdown_delay": value}, environ={}, cwd=tmp_path)
    err = info.value
    assert err.exit_code == EXIT_USAGE
    assert err.option == "--shutdown-delay"
    assert str(err).startswith("invalid value for --shutdown-delay (from command line)")
    assert fragment in str(err)


def test_invalid_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(APP, environ={"DEVSERVE_SHUTDOWN_DELAY": "-2"}, cwd=tmp_path)
    assert info.value.source == "environment variable DEVSERVE_SHUTDOWN_DELAY"


def test_cli_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["main:app", "--shutdown-delay", "-5"]) == EXIT_USAGE == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "devserve: error: invalid value for --shutdown-delay (from command line): "
        "must be at least 0, got -5.0"
    ]


def test_help_lists_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--shutdown-delay SECONDS" in capsys.readouterr().out
