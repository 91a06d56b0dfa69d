"""load_config: source precedence, coercion per field type, validation messages that name the
option and its source, pyproject discovery, and the .env parser."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from devserve.config import Config, load_config, option_name, parse_env, read_env_file
from devserve.errors import EXIT_USAGE, ConfigError

APP = {"app": "main:app"}


def load(tmp_path: Path, overrides: dict[str, Any] | None = None,
         environ: dict[str, str] | None = None, **kw: Any) -> Config:
    """load_config isolated from the real environment and any pyproject above tmp_path."""
    return load_config({**APP, **(overrides or {})}, environ=environ or {}, cwd=tmp_path, **kw)


def write_pyproject(directory: Path, body: str) -> Path:
    path = directory / "pyproject.toml"
    path.write_text(body, encoding="utf-8")
    return path


def config_error(tmp_path: Path, overrides: dict[str, Any] | None = None,
                 environ: dict[str, str] | None = None, **kw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, overrides, environ, **kw)
    assert info.value.exit_code == EXIT_USAGE
    return info.value


# --- defaults and precedence -----------------------------------------------------------------


def test_defaults_are_the_dataclass_defaults(tmp_path: Path) -> None:
    assert load(tmp_path) == Config(app="main:app")


def test_cli_beats_env_beats_pyproject_beats_defaults(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "[tool.devserve]\nport = 7000\nworkers = 3\nhost = '0.0.0.0'\n"
                              "backlog = 10\n")
    config = load(
        tmp_path,
        {"port": "9000"},
        {"DEVSERVE_PORT": "8500", "DEVSERVE_WORKERS": "2", "DEVSERVE_HOST": "::1"},
    )
    assert config.port == 9000  # CLI
    assert (config.workers, config.host) == (2, "::1")  # env over pyproject
    assert config.backlog == 10  # pyproject over default
    assert config.timeout_keep_alive == 5.0  # default


def test_app_may_come_from_env_or_pyproject(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "[tool.devserve]\napp = 'proj.asgi:application'\n")
    assert load_config({}, environ={}, cwd=tmp_path).app == "proj.asgi:application"
    env = {"DEVSERVE_APP": "other:app"}
    assert load_config({}, environ=env, cwd=tmp_path).app == "other:app"


def test_callable_app_is_accepted(tmp_path: Path) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    assert load(tmp_path, {"app": app}).app is app


def test_pyproject_found_from_nested_subdirectory(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "[tool.devserve]\nport = 7001\n")
    nested = tmp_path / "src" / "pkg" / "deep"
    nested.mkdir(parents=True)
    assert load(nested).port == 7001


def test_nearest_pyproject_wins_even_without_devserve_table(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "[tool.devserve]\nport = 7001\n")
    inner = tmp_path / "inner"
    inner.mkdir()
    write_pyproject(inner, "[project]\nname = 'inner'\n")
    assert load(inner).port == 8000


def test_pyproject_accepts_dashes_and_underscores(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "[tool.devserve]\ntimeout-keep-alive = 7\n"
                              "timeout_graceful_shutdown = 3\n")
    config = load(tmp_path)
    assert config.timeout_keep_alive == 7.0
    assert isinstance(config.timeout_keep_alive, float)
    assert config.timeout_graceful_shutdown == 3.0


def test_pyproject_both_spellings_of_one_key_is_an_error(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "[tool.devserve]\ntimeout-keep-alive = 7\ntimeout_keep_alive = 8\n")
    assert "given twice" in str(config_error(tmp_path))


def test_unknown_pyproject_key_names_key_and_file(tmp_path: Path) -> None:
    path = write_pyproject(tmp_path, "[tool.devserve]\nprot = 8001\n")
    err = config_error(tmp_path)
    assert err.option == "prot"
    assert err.source == f"{path} [tool.devserve]"
    assert "unknown setting" in str(err) and str(path) in str(err)
    assert "did you mean 'port'" in str(err)


def test_unknown_pyproject_key_suggestion_keeps_dashes(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "[tool.devserve]\ntimeout-keep-alve = 1\n")
    assert "did you mean 'timeout-keep-alive'" in str(config_error(tmp_path))
    write_pyproject(tmp_path, "[tool.devserve]\nzzzzzz = 1\n")
    err = config_error(tmp_path)
    assert err.option == "zzzzzz" and "did you mean" not in str(err)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write_pyproject(tmp_path, "[tool.devserve\nport = 1\n")
    err = config_error(tmp_path)
    assert err.source == str(path)


def test_unknown_override_is_an_error(tmp_path: Path) -> None:
    err = config_error(tmp_path, {"wokers": 2}, source_name="devserve.run()")
    assert err.option == "wokers" and err.source == "devserve.run()"
    assert "did you mean 'workers'" in str(err)


def test_unknown_devserve_env_vars_are_ignored(tmp_path: Path) -> None:
    env = {"DEVSERVE_TUI": "off", "DEVSERVE_SOMETHING_LATER": "x", "DEVSERVE_PORT": "8123"}
    assert load(tmp_path, environ=env).port == 8123


def test_uvicorn_forwarded_allow_ips_is_a_lower_priority_fallback(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "[tool.devserve]\nforwarded-allow-ips = ['10.0.0.1']\n")
    assert load(tmp_path).forwarded_allow_ips == ("10.0.0.1",)
    env = {"FORWARDED_ALLOW_IPS": "10.0.0.2, 10.0.0.3"}
    assert load(tmp_path, environ=env).forwarded_allow_ips == ("10.0.0.2", "10.0.0.3")
    env["DEVSERVE_FORWARDED_ALLOW_IPS"] = "*"
    assert load(tmp_path, environ=env).forwarded_allow_ips == ("*",)
    assert load(tmp_path, {"forwarded_allow_ips": "::1"}, env).forwarded_allow_ips == ("::1",)


def test_the_real_environment_is_used_when_environ_is_omitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVSERVE_PORT", "8124")
    assert load_config(APP, cwd=tmp_path).port == 8124


# --- coercion ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("yes", True), ("ON", True),
     ("false", False), ("0", False), ("no", False), ("Off", False)],
)
def test_bool_spellings(tmp_path: Path, text: str, expected: bool) -> None:
    assert load(tmp_path, environ={"DEVSERVE_ACCESS_LOG": text}).access_log is expected


def test_bad_bool_names_env_var(tmp_path: Path) -> None:
    err = config_error(tmp_path, environ={"DEVSERVE_ACCESS_LOG": "maybe"})
    assert err.option == "--access-log"
    assert err.source == "environment variable DEVSERVE_ACCESS_LOG"
    assert "expected a boolean" in str(err)


def test_optional_bool_none_spellings(tmp_path: Path) -> None:
    assert load(tmp_path, environ={"DEVSERVE_USE_COLORS": "none"}).use_colors is None
    assert load(tmp_path, environ={"DEVSERVE_USE_COLORS": "no"}).use_colors is False


def test_int_and_float_from_strings(tmp_path: Path) -> None:
    env = {"DEVSERVE_BACKLOG": " 64 ", "DEVSERVE_TIMEOUT_KEEP_ALIVE": "2.5",
           "DEVSERVE_TIMEOUT_REQUEST_HEADER": "3"}
    config = load(tmp_path, environ=env)
    assert config.backlog == 64
    assert config.timeout_keep_alive == 2.5
    assert config.timeout_request_header == 3.0


@pytest.mark.parametrize("value", ["8000.5", "abc", ""])
def test_bad_int_names_option_and_source(tmp_path: Path, value: str) -> None:
    err = config_error(tmp_path, environ={"DEVSERVE_PORT": value})
    assert err.option == "--port"
    assert "DEVSERVE_PORT" in str(err) and "expected an integer" in str(err)


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "[tool.devserve]\nworkers = true\n")
    assert "expected an integer" in str(config_error(tmp_path))


@pytest.mark.parametrize("value", ["nan", "inf", "soon"])
def test_bad_float(tmp_path: Path, value: str) -> None:
    err = config_error(tmp_path, {"timeout_keep_alive": value})
    assert err.option == "--timeout-keep-alive" and err.source == "command line"


@pytest.mark.parametrize("value", ["none", "None", ""])
def test_optional_int_none_spellings(tmp_path: Path, value: str) -> None:
    config = load(tmp_path, environ={"DEVSERVE_LIMIT_REQUEST_BODY": value})
    assert config.limit_request_body is None


def test_literal_choices_are_case_insensitive_and_checked(tmp_path: Path) -> None:
    assert load(tmp_path, environ={"DEVSERVE_LOG_LEVEL": "DEBUG"}).log_level == "debug"
    err = config_error(tmp_path, environ={"DEVSERVE_LOOP": "trio"})
    assert err.option == "--loop"
    assert "expected one of auto, asyncio, uvloop" in str(err)


def test_tuple_from_comma_string_and_toml_list(tmp_path: Path) -> None:
    env = {"DEVSERVE_FORWARDED_ALLOW_IPS": "10.0.0.0/8, ::1,,unix:"}
    assert load(tmp_path, environ=env).forwarded_allow_ips == ("10.0.0.0/8", "::1", "unix:")
    write_pyproject(tmp_path, "[tool.devserve]\nforwarded_allow_ips = ['*']\n")
    assert load(tmp_path).forwarded_allow_ips == ("*",)


def test_headers_from_strings_pairs_and_env(tmp_path: Path) -> None:
    config = load(tmp_path, {"headers": ["X-One: 1", "X-Two:two words , ok"]})
    assert config.headers == (("X-One", "1"), ("X-Two", "two words , ok"))
    assert load(tmp_path, {"headers": [("X-A", "b")]}).headers == (("X-A", "b"),)
    env = {"DEVSERVE_HEADERS": "X-A: 1, X-B: 2"}
    assert load(tmp_path, environ=env).headers == (("X-A", "1"), ("X-B", "2"))
    write_pyproject(tmp_path, "[tool.devserve]\nheaders = ['X-C: a, b']\n")
    assert load(tmp_path).headers == (("X-C", "a, b"),)


@pytest.mark.parametrize(
    ("header", "reason"),
    [("NoColon", "expected 'Name: value'"), ("Bad Name: x", "not a valid header name"),
     (": value", "not a valid header name"), ("X-A: a\r\nX-B: b", "CR, LF or NUL")],
)
def test_bad_header(tmp_path: Path, header: str, reason: str) -> None:
    err = config_error(tmp_path, {"headers": [header]})
    assert err.option == "--header" and err.source == "command line"
    assert reason in str(err)


def test_string_field_rejects_other_types(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "[tool.devserve]\nhost = 127\n")
    err = config_error(tmp_path)
    assert err.option == "--host" and "expected a string" in str(err)


def test_config_is_frozen_and_complete(tmp_path: Path) -> None:
    config = load(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("port", -1, "at least 0"),
        ("port", 65536, "between 0 and 65535"),
        ("fd", -1, "at least 0"),
        ("workers", 0, "at least 1"),
        ("backlog", 0, "at least 1"),
        ("limit_concurrency", 0, "at least 1"),
        ("limit_max_requests", 0, "at least 1"),
        ("limit_request_fields", 0, "at least 1"),
        ("limit_request_body", -1, "at least 0"),
        ("h11_max_incomplete_event_size", 1023, "at least 1024"),
        ("timeout_keep_alive", -0.5, "at least 0"),
        ("timeout_request_header", -1, "at least 0"),
        ("timeout_graceful_shutdown", 0, "greater than 0"),
    ],
)
def test_numeric_bounds(tmp_path: Path, field: str, value: Any, fragment: str) -> None:
    err = config_error(tmp_path, {field: value})
    assert err.option == option_name(field) == "--" + field.replace("_", "-")
    assert err.source == "command line"
    assert fragment in str(err)
    assert str(err).startswith(f"invalid value for --{field.replace('_', '-')} (from command line)")


def test_bound_error_from_pyproject_names_file(tmp_path: Path) -> None:
    path = write_pyproject(tmp_path, "[tool.devserve]\nworkers = 0\n")
    err = config_error(tmp_path)
    assert err.option == "--workers" and err.source == f"{path} [tool.devserve]"


def test_numeric_edges_are_accepted(tmp_path: Path) -> None:
    config = load(tmp_path, {"port": 0, "timeout_keep_alive": 0, "limit_concurrency": 1,
                             "h11_max_incomplete_event_size": 1024, "workers": 1})
    assert (config.port, config.timeout_keep_alive) == (0, 0.0)
    assert load(tmp_path, {"port": 65535}).port == 65535


def test_limit_request_body_zero_means_unlimited(tmp_path: Path) -> None:
    assert load(tmp_path, {"limit_request_body": 0}).limit_request_body is None
    assert load(tmp_path, {"limit_request_body": "1024"}).limit_request_body == 1024


def test_uds_and_fd_are_mutually_exclusive(tmp_path: Path) -> None:
    err = config_error(tmp_path, {"uds": "/tmp/x.sock"}, {"DEVSERVE_FD": "3"})
    assert err.option == "--fd" and err.source == "environment variable DEVSERVE_FD"
    assert "--uds" in str(err)
    assert load(tmp_path, {"fd": "3"}).fd == 3


@pytest.mark.parametrize(
    "entry", ["*", "127.0.0.1", "::1", "10.0.0.0/8", "fd00::/8", "10.1.2.3/8", "unix:"]
)
def test_forwarded_allow_ips_valid(tmp_path: Path, entry: str) -> None:
    assert load(tmp_path, {"forwarded_allow_ips": entry}).forwarded_allow_ips == (entry,)


@pytest.mark.parametrize("entry", ["localhost", "10.0.0.256", "10.0.0.0/33", "**"])
def test_forwarded_allow_ips_invalid(tmp_path: Path, entry: str) -> None:
    err = config_error(tmp_path, environ={"DEVSERVE_FORWARDED_ALLOW_IPS": f"127.0.0.1,{entry}"})
    assert err.option == "--forwarded-allow-ips"
    assert err.source == "environment variable DEVSERVE_FORWARDED_ALLOW_IPS"
    assert repr(entry) in str(err)


@pytest.mark.parametrize("value", ["", "/api", "/a/b"])
def test_root_path_valid(tmp_path: Path, value: str) -> None:
    assert load(tmp_path, {"root_path": value}).root_path == value


@pytest.mark.parametrize("value", ["api", "/api/", "/"])
def test_root_path_invalid(tmp_path: Path, value: str) -> None:
    err = config_error(tmp_path, {"root_path": value})
    assert err.option == "--root-path" and "must start with '/'" in str(err)


def test_health_path(tmp_path: Path) -> None:
    assert load(tmp_path, {"health_path": "/healthz"}).health_path == "/healthz"
    assert load(tmp_path, environ={"DEVSERVE_HEALTH_PATH": ""}).health_path is None
    err = config_error(tmp_path, {"health_path": "healthz"})
    assert err.option == "--health-path"


def test_ssl_files_must_come_together_and_exist(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("k")
    (tmp_path / "cert.pem").write_text("c")
    err = config_error(tmp_path, {"ssl_keyfile": "key.pem"})
    assert err.option == "--ssl-keyfile" and "requires --ssl-certfile" in str(err)
    err = config_error(tmp_path, environ={"DEVSERVE_SSL_CERTFILE": "cert.pem"})
    assert err.option == "--ssl-certfile" and "requires --ssl-keyfile" in str(err)
    assert err.source == "environment variable DEVSERVE_SSL_CERTFILE"
    err = config_error(tmp_path, {"ssl_keyfile": "key.pem", "ssl_certfile": "missing.pem"})
    assert err.option == "--ssl-certfile" and "file not found" in str(err)
    config = load(tmp_path, {"ssl_keyfile": "key.pem", "ssl_certfile": str(tmp_path / "cert.pem")})
    assert config.ssl_keyfile == "key.pem"


def test_env_file_must_exist(tmp_path: Path) -> None:
    err = config_error(tmp_path, {"env_file": ".env"})
    assert err.option == "--env-file" and "file not found" in str(err)
    (tmp_path / ".env").write_text("A=1\n")
    assert load(tmp_path, {"env_file": ".env"}).env_file == ".env"


@pytest.mark.parametrize("app", ["main", "main:", ":app", "main:app:x", "1mod:app", "a b:app"])
def test_app_string_format(tmp_path: Path, app: str) -> None:
    err = config_error(tmp_path, {"app": app})
    assert err.option == "APP" and "expected 'module:attribute'" in str(err)


@pytest.mark.parametrize("app", ["main:app", "pkg.sub.mod:create_app", "m:obj.attr"])
def test_app_string_format_ok(tmp_path: Path, app: str) -> None:
    assert load(tmp_path, {"app": app}).app == app


def test_app_of_wrong_type(tmp_path: Path) -> None:
    assert "ASGI callable" in str(config_error(tmp_path, {"app": 42}))


def test_missing_app_everywhere(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({}, environ={}, cwd=tmp_path)
    assert info.value.option == "APP"
    assert info.value.hint == "pass it as 'module:attribute', e.g. devserve main:app"


def test_empty_host(tmp_path: Path) -> None:
    assert config_error(tmp_path, {"host": ""}).option == "--host"


# --- .env parser -------------------------------------------------------------------------------


def test_parse_env_forms() -> None:
    text = (
        "# comment\n"
        "\n"
        "PLAIN=value\n"
        "export EXPORTED=yes\n"
        "  SPACED = padded value   \n"
        "INLINE=abc # trailing comment\n"
        "HASH_IN=a#b\n"
        "SINGLE='lit $HOME \\n # not a comment'\n"
        'DOUBLE="tab\\there \\"q\\" \\\\ # kept"  # comment\n'
        'MULTI="line1\n'
        'line2"\n'
        "EMPTY=\n"
        "EMPTY_Q=''\n"
        "export=plain-key-named-export\n"
        "DUP=1\n"
        "DUP=2\n"
    )
    assert parse_env(text) == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SPACED": "padded value",
        "INLINE": "abc",
        "HASH_IN": "a#b",
        "SINGLE": "lit $HOME \\n # not a comment",
        "DOUBLE": 'tab\there "q" \\ # kept',
        "MULTI": "line1\nline2",
        "EMPTY": "",
        "EMPTY_Q": "",
        "export": "plain-key-named-export",
        "DUP": "2",
    }


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("JUSTAWORD\n", "line 1: expected KEY=VALUE"),
     ("A=1\n1BAD=2\n", "line 2: expected KEY=VALUE"),
     ('A="open\nB=2\n', "line 1: unterminated \" quote"),
     ("A='x' y\n", "unexpected text after the closing quote")],
)
def test_parse_env_errors(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_env(text, source="/x/.env")
    assert info.value.option == "--env-file" and info.value.source == "/x/.env"
    assert fragment in str(info.value)


def test_read_env_file(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("export A=1\r\nB='two'\r\n", encoding="utf-8")
    assert read_env_file(path) == {"A": "1", "B": "two"}
    with pytest.raises(ConfigError) as info:
        read_env_file(tmp_path / "missing.env")
    assert info.value.option == "--env-file"
    assert info.value.source == str(tmp_path / "missing.env")


def test_load_config_does_not_apply_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DEVSERVE_PORT=9999\n")
    assert load(tmp_path, {"env_file": ".env"}).port == 8000
