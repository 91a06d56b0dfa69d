"""Frozen, validated server configuration.

Sources, highest first: CLI flags, ``DEVSERVE_*`` environment variables, ``[tool.devserve]`` in
the nearest ``pyproject.toml``, then the defaults below. Every value is validated once here so the
rest of the server can trust it.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_type_hints

from devserve._coerce import CoerceError, coerce
from devserve.errors import ConfigError

LoopSetting = Literal["auto", "asyncio", "uvloop"]
HTTPSetting = Literal["auto", "h11"]
InterfaceSetting = Literal["auto", "asgi3", "asgi2", "wsgi"]
ExecutionSetting = Literal["async", "sync"]
LifespanSetting = Literal["auto", "on", "off"]
WorkerModeSetting = Literal["auto", "thread", "process"]
LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
TUISetting = Literal["auto", "on", "off"]
WSSetting = Literal["auto", "none", "wsproto"]
LogFormat = Literal["text", "json"]


@dataclass(frozen=True)
class Config:
    """Everything the server needs to run, resolved from all sources. Immutable by design."""

    app: Any = None  # import string "module:attr" or an ASGI callable
    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    fd: int | None = None
    workers: int = 1
    worker_mode: WorkerModeSetting = "auto"
    loop: LoopSetting = "auto"
    http: HTTPSetting = "auto"
    interface: InterfaceSetting = "auto"
    lifespan: LifespanSetting = "auto"
    env_file: str | None = None
    log_level: LogLevel = "info"
    access_log: bool = True
    use_colors: bool | None = None
    proxy_headers: bool = True
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)
    root_path: str = ""
    limit_concurrency: int | None = None
    limit_max_requests: int | None = None
    limit_request_fields: int = 100
    limit_request_body: int | None = 100 * 1024 * 1024
    backlog: int = 2048
    timeout_keep_alive: float = 5.0
    timeout_graceful_shutdown: float = 30.0
    shutdown_delay: float = 0.0  # SIGTERM: health 503 but keep serving this long, then drain
    timeout_request_header: float = 10.0
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    server_header: bool = True
    date_header: bool = True
    app_dir: str = "."
    factory: bool = False
    h11_max_incomplete_event_size: int = 16 * 1024
    health_path: str | None = None
    reload: bool = False
    reload_dirs: tuple[str, ...] = ()
    reload_includes: tuple[str, ...] = ()
    reload_excludes: tuple[str, ...] = ()
    reload_delay: float = 0.01  # quiet period after one saved file (see reload.watcher)
    reload_poll: bool = False
    reload_grace: float = 5.0
    livereload: bool = False
    ws: WSSetting = "auto"
    ws_max_size: int = 16 * 1024 * 1024
    ws_ping_interval: float | None = 20.0
    ws_ping_timeout: float | None = 20.0
    ws_per_message_deflate: bool = True
    tui: TUISetting = "auto"
    log_format: LogFormat = "text"
    http2: bool = True
    https: bool = False
    ssl_keyfile_password: str | None = None
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: int = 0  # ssl.CERT_NONE; 1 optional, 2 required (uvicorn's numbers)
    ssl_ciphers: str = "TLSv1"
    h2_max_concurrent_streams: int = 100
    h2_max_header_list_size: int = 16 * 1024
    h2_ping_interval: float | None = 20.0  # PING a quiet connection with open streams; 0 off
    h2_ping_timeout: float | None = 20.0  # no PING ACK within this: GOAWAY and close
    execution: ExecutionSetting = "async"  # sync: ASGI requests on SyncWorker threads
    threads: int = 8  # SyncWorker threads per worker slot (WSGI, --execution sync)
    accept_queue: int | None = None  # sync mode: waiting connections before 503
    http3: bool = False  # HTTP/3 over QUIC on a UDP socket (needs TLS)
    http3_port: int | None = None  # UDP port for HTTP/3; None: the TCP port


# --------------------------------------------------------------------------------------------
# Loading: merge the sources (highest first: overrides, DEVSERVE_* env, pyproject, defaults),
# coerce each value to its field type, validate, and name option + source in every error.

ENV_PREFIX = "DEVSERVE_"
APP_HINT = "pass it as 'module:attribute', e.g. devserve main:app"
_CLI_SPELLING = {"app": "APP", "headers": "--header"}
_IMPORT_STRING_RE = re.compile(r"^[^\W\d]\w*(\.[^\W\d]\w*)*:[^\W\d]\w*(\.[^\W\d]\w*)*$")
# Lower bounds for numeric fields (None for an Optional field is always allowed).
_MINIMUM: dict[str, float] = {
    "port": 0,
    "fd": 0,
    "workers": 1,
    "backlog": 1,
    "limit_concurrency": 1,
    "limit_max_requests": 1,
    "limit_request_fields": 1,
    "limit_request_body": 0,
    "h11_max_incomplete_event_size": 1024,
    "timeout_keep_alive": 0,
    "timeout_request_header": 0,
    "shutdown_delay": 0,
    "reload_delay": 0,
    "ws_max_size": 1,
    "ws_ping_interval": 0,
    "ws_ping_timeout": 0,
    "reload_grace": 0.01,
    "h2_max_concurrent_streams": 1,
    "h2_max_header_list_size": 1024,
    "h2_ping_interval": 0,
    "h2_ping_timeout": 0,
    "threads": 1,
    "accept_queue": 1,
    "http3_port": 0,
}


def option_name(field_name: str) -> str:
    """The spelling a user types for a field (``--port``, ``APP``), so errors name it."""
    return _CLI_SPELLING.get(field_name, "--" + field_name.replace("_", "-"))


@functools.cache
def field_types() -> dict[str, Any]:
    """Field name → resolved annotation, in declaration order (annotations are strings here)."""
    hints = get_type_hints(Config)
    return {f.name: hints[f.name] for f in fields(Config)}


def find_pyproject(start: Path) -> Path | None:
    """The nearest ``pyproject.toml`` at or above *start*: the project root a user runs from."""
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _unknown(key: str, known: Iterable[str], where: str) -> str:
    match = difflib.get_close_matches(key.replace("-", "_"), list(known), n=1)
    if not match:
        return f"unknown setting in {where}"
    guess = match[0].replace("_", "-") if "-" in key else match[0]  # echo the user's spelling
    return f"unknown setting in {where}; did you mean {guess!r}?"


def read_pyproject(path: Path) -> dict[str, Any]:
    """``[tool.devserve]`` of *path* with keys normalised to field names; unknown keys fail
    loudly because a typo there would otherwise be silently ignored."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("pyproject.toml", f"cannot be read: {exc}", source=str(path)) from exc
    tool = data.get("tool")
    table = tool.get("devserve") if isinstance(tool, dict) else None
    if table is None:
        return {}
    source = f"{path} [tool.devserve]"
    if not isinstance(table, dict):
        raise ConfigError("[tool.devserve]", "must be a table", source=str(path))
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in field_types():
            raise ConfigError(key, _unknown(key, field_types(), "[tool.devserve]"), source=source)
        if name in out:
            raise ConfigError(key, "given twice (dash and underscore spellings)", source=source)
        out[name] = value
    return out


def load_config(
    overrides: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    source_name: str = "command line",
) -> Config:
    """Resolve a ``Config`` from *overrides* (CLI flags or ``run()`` kwargs), the environment,
    the nearest pyproject.toml and the defaults. Raises ``ConfigError`` on the first bad value.

    ``env_file`` is only checked to exist here; the server applies it (see ``read_env_file``).
    """
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else Path(cwd)
    types = field_types()
    raw: dict[str, tuple[Any, str]] = {}  # field → (value, source), later layers overwrite

    pyproject = find_pyproject(cwd)
    if pyproject is not None:
        where = f"{pyproject} [tool.devserve]"
        raw.update((name, (value, where)) for name, value in read_pyproject(pyproject).items())
    if "FORWARDED_ALLOW_IPS" in environ:  # uvicorn's variable, below our own prefix
        raw["forwarded_allow_ips"] = (
            environ["FORWARDED_ALLOW_IPS"], "environment variable FORWARDED_ALLOW_IPS"
        )
    for name in types:  # unknown DEVSERVE_* variables belong to other features: ignore them
        var = ENV_PREFIX + name.upper()
        if var in environ:
            raw[name] = (environ[var], f"environment variable {var}")
    for key, value in overrides.items():
        name = key.replace("-", "_")
        if name not in types:
            raise ConfigError(key, _unknown(key, types, "options"), source=source_name)
        raw[name] = (value, source_name)

    values: dict[str, Any] = {}
    sources: dict[str, str | None] = {}
    for name, hint in types.items():
        if name not in raw:
            values[name], sources[name] = getattr(Config, name), None
            continue
        value, source = raw[name]
        try:
            values[name] = coerce(value, hint)
        except CoerceError as exc:
            raise ConfigError(option_name(name), str(exc), source=source) from None
        sources[name] = source
    _validate(values, sources, cwd)
    return Config(**values)


def _fail(name: str, message: str, sources: Mapping[str, str | None], **kw: Any) -> ConfigError:
    return ConfigError(option_name(name), message, source=sources[name], **kw)


def _validate(values: dict[str, Any], sources: Mapping[str, str | None], cwd: Path) -> None:
    """Check each value and the combinations; normalises a few in place (body limit 0)."""
    for name, minimum in _MINIMUM.items():
        value = values[name]
        if value is not None and value < minimum:
            raise _fail(name, f"must be at least {minimum:g}, got {value!r}", sources)
    if values["port"] > 65535:
        raise _fail("port", f"must be between 0 and 65535, got {values['port']}", sources)
    if values["timeout_graceful_shutdown"] <= 0:
        got = values["timeout_graceful_shutdown"]
        raise _fail("timeout_graceful_shutdown", f"must be greater than 0, got {got!r}", sources)
    if values["limit_request_body"] == 0:
        values["limit_request_body"] = None  # 0 means unlimited; one spelling downstream
    _validate_app(values["app"], sources)
    for name in ("host", "app_dir"):
        if not values[name]:
            raise _fail(name, "must not be empty", sources)
    for entry in values["forwarded_allow_ips"]:
        if not _is_trusted_host(entry):
            raise _fail(
                "forwarded_allow_ips",
                f"{entry!r} is not '*', an IP address, a CIDR network or 'unix:'",
                sources,
            )
    root = values["root_path"]
    if root and (not root.startswith("/") or root.endswith("/")):
        raise _fail(
            "root_path", f"must start with '/' and not end with '/', got {root!r}", sources,
            hint="use '' for no prefix, e.g. --root-path /api",
        )
    health = values["health_path"]
    if health is not None and not health.startswith("/"):
        raise _fail("health_path", f"must start with '/', got {health!r}", sources)
    if values["uds"] is not None and values["fd"] is not None:
        raise _fail("fd", "cannot be combined with --uds; give only one", sources)
    _validate_files(values, sources, cwd)
    _validate_tls(values, sources)


def _validate_app(app: Any, sources: Mapping[str, str | None]) -> None:
    if app is None:
        raise ConfigError("APP", "no application given", hint=APP_HINT)
    if isinstance(app, str):
        if not _IMPORT_STRING_RE.match(app):
            raise _fail("app", f"expected 'module:attribute', got {app!r}", sources,
                        hint=APP_HINT)
    elif not callable(app):
        raise _fail("app", f"expected 'module:attribute' or an ASGI callable, got {app!r}",
                    sources)


def _is_trusted_host(entry: str) -> bool:
    if entry == "*" or entry.startswith("unix:"):
        return True
    try:
        ipaddress.ip_network(entry, strict=False)  # also accepts a bare address
    except ValueError:
        return False
    return True


def _validate_files(values: dict[str, Any], sources: Mapping[str, str | None], cwd: Path) -> None:
    """TLS files must come as a pair and, like the env file, exist (relative to *cwd*)."""
    key, cert = values["ssl_keyfile"], values["ssl_certfile"]
    if (key is None) != (cert is None):
        given, missing = ("ssl_keyfile", "--ssl-certfile") if cert is None else (
            "ssl_certfile", "--ssl-keyfile")
        raise _fail(given, f"requires {missing} as well", sources)
    for name in ("ssl_keyfile", "ssl_certfile", "env_file", "ssl_ca_certs"):
        value = values[name]
        if value is not None and not (cwd / value).is_file():
            raise _fail(name, f"file not found: {value!r}", sources)


def _validate_tls(values: dict[str, Any], sources: Mapping[str, str | None]) -> None:
    """TLS options that only make sense together; limits of HTTP/2 settings (RFC 9113)."""
    if values["ssl_cert_reqs"] not in (0, 1, 2):
        raise _fail("ssl_cert_reqs", f"must be 0 (none), 1 (optional) or 2 (required), got "
                    f"{values['ssl_cert_reqs']!r}", sources)
    if values["ssl_keyfile_password"] is not None and values["ssl_keyfile"] is None:
        raise _fail("ssl_keyfile_password", "requires --ssl-keyfile as well", sources)
    if values["h2_max_concurrent_streams"] > 2**31 - 1:
        raise _fail("h2_max_concurrent_streams", "must be at most 2147483647", sources)
    if not values["ssl_ciphers"].strip():
        raise _fail("ssl_ciphers", "must not be empty", sources, hint="the default is TLSv1")
    if values["http3"] and not (values["https"] or values["ssl_certfile"]):
        raise _fail("http3", "requires TLS (QUIC always encrypts)", sources,
                    hint="add --https for a development certificate, or --ssl-certfile/"
                         "--ssl-keyfile")
    if values["http3_port"] is not None and values["http3_port"] > 65535:
        raise _fail("http3_port", f"must be between 0 and 65535, got {values['http3_port']}",
                    sources)
    if values["http3"] and values["uds"] and values["http3_port"] is None:
        raise _fail("http3", "needs --http3-port with --uds (there is no TCP port to share)",
                    sources)


# --------------------------------------------------------------------------------------------
# .env files: KEY=VALUE, `export KEY=VALUE`, '#' comments, single quotes (literal) and double
# quotes (escapes, may span lines). No ${VAR} expansion: predictable beats clever here.

_ENV_LINE_RE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)$", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def read_env_file(path: str | Path) -> dict[str, str]:
    """Parse the dotenv file at *path*; the caller decides whether to apply it to os.environ."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("--env-file", f"cannot be read: {exc}", source=str(path)) from exc
    return parse_env(text, source=str(path))


def parse_env(text: str, *, source: str = "env file") -> dict[str, str]:
    """Parse dotenv *text*; later assignments win. Errors name the line number."""
    lines = text.splitlines()
    result: dict[str, str] = {}
    i = 0
    while i < len(lines):
        lineno, line = i + 1, lines[i].lstrip()
        i += 1
        if not line.strip() or line.startswith("#"):
            continue
        match = _ENV_LINE_RE.match(line)
        if match is None:
            raise ConfigError("--env-file", f"line {lineno}: expected KEY=VALUE, got "
                              f"{line.strip()!r}", source=source)
        key, rest = match.group(1), match.group(2)
        if rest[:1] in ("'", '"'):
            quote, body = rest[0], rest[1:]
            while (end := _closing_quote(body, quote)) < 0:
                if i >= len(lines):
                    raise ConfigError("--env-file", f"line {lineno}: unterminated {quote} quote",
                                      source=source)
                body += "\n" + lines[i]
                i += 1
            tail = body[end + 1:].strip()
            if tail and not tail.startswith("#"):
                raise ConfigError("--env-file", f"line {lineno}: unexpected text after the "
                                  f"closing quote: {tail!r}", source=source)
            value = body[:end] if quote == "'" else _unescape(body[:end])
        else:
            value = re.sub(r"(^|\s+)#.*$", "", rest).strip()
        result[key] = value
    return result


def _closing_quote(body: str, quote: str) -> int:
    """Index of the unescaped closing *quote* in *body*, or -1."""
    if quote == "'":
        return body.find("'")
    i = 0
    while i < len(body):
        if body[i] == "\\":
            i += 2
            continue
        if body[i] == '"':
            return i
        i += 1
    return -1


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text,
                  flags=re.DOTALL)
