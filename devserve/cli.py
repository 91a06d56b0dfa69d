"""``devserve APP [options]``: uvicorn's flag names → ``load_config`` → ``serve`` → exit code.

The top of the import layering: it composes the server with the display the configuration asks
for (:func:`devserve.display.make_display`). Numbers are passed through as strings so that
``load_config`` reports them like any other bad value: one ``devserve: error:`` line naming the
option and its source.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from typing import Any

from devserve.config import Config, load_config
from devserve.display import make_display
from devserve.errors import DevserveError
from devserve.server import serve

PROG = "devserve"
_FALLBACK_VERSION = "0.1.0.dev0"
_EXIT_INTERRUPTED = 130


def version() -> str:
    """The installed distribution's version, or the in-tree one when running from a checkout."""
    try:
        return dist_version("devserve")
    except PackageNotFoundError:
        return _FALLBACK_VERSION


class _VersionAction(argparse.Action):
    """Like argparse's ``version`` action, but resolves the version only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs["default"] = argparse.SUPPRESS
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        sys.stdout.write(f"{PROG} {version()}\n")  # parser.exit(message) would use stderr
        parser.exit()


def _default(name: str) -> str:
    """``(default: X)`` from the Config dataclass, so help never drifts from the contract."""
    value = getattr(Config, name)
    if isinstance(value, tuple):
        value = ",".join(value) if value else "none"
    elif value is None:
        value = "none"
    elif isinstance(value, bool):
        value = str(value).lower()
    return f"(default: {value})"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every option defaults to SUPPRESS so only given flags override."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run an ASGI app for development. Options may also come from DEVSERVE_* "
        "environment variables and [tool.devserve] in pyproject.toml.",
        argument_default=argparse.SUPPRESS,
    )
    add = parser.add_argument
    flag = argparse.BooleanOptionalAction
    add("app", metavar="APP", nargs="?", help="the app as 'module:attribute', e.g. main:app")
    add("--version", action=_VersionAction, help="print the version and exit")

    net = parser.add_argument_group("socket")
    net.add_argument("--host", help=f"bind address {_default('host')}")
    net.add_argument("--port", metavar="INT", help=f"bind port, 0 for any {_default('port')}")
    net.add_argument("--uds", metavar="PATH", help="bind a Unix domain socket instead")
    net.add_argument("--fd", metavar="INT", help="serve an inherited socket file descriptor")
    net.add_argument("--backlog", metavar="INT", help=f"listen backlog {_default('backlog')}")
    net.add_argument("--ssl-keyfile", metavar="PATH", help="TLS private key (with --ssl-certfile)")
    net.add_argument("--ssl-certfile", metavar="PATH", help="TLS certificate (with --ssl-keyfile)")

    app = parser.add_argument_group("application")
    app.add_argument("--app-dir", metavar="DIR",
                     help=f"directory put on sys.path for APP {_default('app_dir')}")
    app.add_argument("--factory", action="store_true", help="APP is a factory returning the app")
    app.add_argument("--env-file", metavar="PATH", help="load environment variables from a file")
    app.add_argument("--interface", choices=["auto", "asgi3", "asgi2", "wsgi"],
                     help=f"app interface {_default('interface')}")
    app.add_argument("--lifespan", choices=["auto", "on", "off"],
                     help=f"lifespan protocol {_default('lifespan')}")
    app.add_argument("--root-path", metavar="PATH",
                     help="ASGI root_path when mounted below a URL prefix, e.g. /api")
    app.add_argument("--health-path", metavar="PATH",
                     help="answer 200 on this path without calling the app, e.g. /healthz")

    workers = parser.add_argument_group("workers")
    workers.add_argument("--workers", metavar="INT",
                         help=f"number of workers {_default('workers')}")
    workers.add_argument("--worker-mode", choices=["auto", "thread", "process"],
                         help=f"run workers as threads or processes {_default('worker_mode')}")
    workers.add_argument("--loop", choices=["auto", "asyncio", "uvloop"],
                         help=f"event loop {_default('loop')}")
    workers.add_argument("--http", choices=["auto", "h11"],
                         help=f"HTTP/1.1 implementation {_default('http')}")
    workers.add_argument("--execution", choices=["async", "sync"],
                         help=f"ASGI apps: event-loop workers, or blocking threads with a loop "
                              f"per thread (free-threaded builds) {_default('execution')}")
    workers.add_argument("--threads", metavar="INT",
                         help=f"threads per worker for WSGI and --execution sync "
                              f"{_default('threads')}")
    workers.add_argument("--accept-queue", metavar="INT",
                         help="WSGI/sync: connections that may wait for a thread before new "
                              "ones get 503 (default: 4 x threads x workers, at least 64)")

    http = parser.add_argument_group("HTTP")
    http.add_argument("--proxy-headers", action=flag,
                      help=f"trust X-Forwarded-* from --forwarded-allow-ips "
                           f"{_default('proxy_headers')}")
    http.add_argument("--forwarded-allow-ips", metavar="IPS",
                      help=f"comma-separated IPs/networks trusted for proxy headers, '*' for all "
                           f"{_default('forwarded_allow_ips')}")
    http.add_argument("--header", action="append", metavar="'NAME: VALUE'", dest="headers",
                      help="add a response header; repeatable")
    http.add_argument("--server-header", action=flag,
                      help=f"send 'server: devserve' {_default('server_header')}")
    http.add_argument("--date-header", action=flag,
                      help=f"send a 'date' header {_default('date_header')}")
    http.add_argument("--h11-max-incomplete-event-size", metavar="BYTES",
                      help=f"max buffered bytes of an incomplete HTTP/1.1 event "
                           f"{_default('h11_max_incomplete_event_size')}")

    tls = parser.add_argument_group("HTTP/2 and TLS")
    tls.add_argument("--http2", action=flag,
                     help=f"serve HTTP/2: ALPN h2 over TLS; h2c prior knowledge and "
                          f"'Upgrade: h2c' in cleartext {_default('http2')}")
    tls.add_argument("--https", action="store_true",
                     help="serve TLS; without --ssl-certfile a self-signed localhost "
                          "certificate is created once in the user cache directory")
    tls.add_argument("--ssl-keyfile-password", metavar="PASSWORD",
                     help="password of an encrypted --ssl-keyfile")
    tls.add_argument("--ssl-ca-certs", metavar="PATH",
                     help="CA certificates file for client certificates")
    tls.add_argument("--ssl-cert-reqs", metavar="INT",
                     help=f"client certificate: 0 none, 1 optional, 2 required "
                          f"{_default('ssl_cert_reqs')}")
    tls.add_argument("--ssl-ciphers", metavar="CIPHERS",
                     help=f"OpenSSL cipher string for TLS 1.2 {_default('ssl_ciphers')}")
    tls.add_argument("--h2-max-concurrent-streams", metavar="INT",
                     help=f"HTTP/2 streams a client may open at once "
                          f"{_default('h2_max_concurrent_streams')}")
    tls.add_argument("--h2-max-header-list-size", metavar="BYTES",
                     help=f"largest HTTP/2 request header list (decoded) "
                          f"{_default('h2_max_header_list_size')}")
    tls.add_argument("--h2-ping-interval", metavar="SECONDS",
                     help=f"PING an HTTP/2 connection with open streams after this long "
                          f"without frames from the client, 0 never "
                          f"{_default('h2_ping_interval')}")
    tls.add_argument("--h2-ping-timeout", metavar="SECONDS",
                     help=f"GOAWAY and close when the PING is not answered within this "
                          f"{_default('h2_ping_timeout')}")
    tls.add_argument("--http3", action="store_true",
                     help="also serve HTTP/3 (QUIC) on a UDP socket; needs TLS (--https or "
                          "--ssl-certfile); responses advertise it with Alt-Svc")
    tls.add_argument("--http3-port", metavar="INT",
                     help="UDP port for HTTP/3 (default: the TCP port)")

    limits = parser.add_argument_group("limits and timeouts")
    limits.add_argument("--limit-concurrency", metavar="INT",
                        help="answer 503 above this many concurrent connections/tasks")
    limits.add_argument("--limit-max-requests", metavar="INT",
                        help="restart a worker after this many requests")
    limits.add_argument("--limit-request-fields", metavar="INT",
                        help=f"max request header fields {_default('limit_request_fields')}")
    limits.add_argument("--limit-request-body", metavar="BYTES",
                        help=f"max request body, 0 for unlimited "
                             f"{_default('limit_request_body')}")
    limits.add_argument("--timeout-keep-alive", metavar="SECONDS",
                        help=f"close idle keep-alive connections {_default('timeout_keep_alive')}")
    limits.add_argument("--timeout-graceful-shutdown", metavar="SECONDS",
                        help=f"wait this long for requests on shutdown "
                             f"{_default('timeout_graceful_shutdown')}")
    limits.add_argument("--shutdown-delay", metavar="SECONDS",
                        help=f"on SIGTERM keep serving this long with the health path at 503, "
                             f"so load balancers stop routing here, then drain "
                             f"{_default('shutdown_delay')}")
    limits.add_argument("--timeout-request-header", metavar="SECONDS",
                        help=f"time allowed to send the request head "
                             f"{_default('timeout_request_header')}")

    ws = parser.add_argument_group("WebSocket")
    ws.add_argument("--ws", choices=["auto", "none", "wsproto"],
                    help=f"WebSocket support; none answers upgrades as plain HTTP {_default('ws')}")
    ws.add_argument("--ws-max-size", metavar="BYTES",
                    help=f"largest message; bigger closes with 1009 {_default('ws_max_size')}")
    ws.add_argument("--ws-ping-interval", metavar="SECONDS",
                    help=f"send a ping this often {_default('ws_ping_interval')}")
    ws.add_argument("--ws-ping-timeout", metavar="SECONDS",
                    help=f"close when no pong within this {_default('ws_ping_timeout')}")
    ws.add_argument("--ws-per-message-deflate", action=flag,
                    help=f"permessage-deflate when offered {_default('ws_per_message_deflate')}")

    reload = parser.add_argument_group("reload")
    reload.add_argument("--reload", action="store_true",
                        help="re-import the app and roll a new worker generation on file changes")
    reload.add_argument("--reload-dir", action="append", metavar="DIR", dest="reload_dirs",
                        help="directory to watch (repeatable; default: the app directory)")
    reload.add_argument("--reload-include", action="append", metavar="GLOB",
                        dest="reload_includes", help="extra file glob that triggers a reload")
    reload.add_argument("--reload-exclude", action="append", metavar="GLOB",
                        dest="reload_excludes", help="file or directory glob to ignore")
    reload.add_argument("--reload-delay", metavar="SECONDS",
                        help="quiet period that ends a batch of changes "
                             f"{_default('reload_delay')}")
    reload.add_argument("--reload-poll", action="store_true",
                        help="poll for changes (Docker/WSL mounts); WATCHFILES_FORCE_POLLING too")
    reload.add_argument("--reload-grace", metavar="SECONDS",
                        help=f"how long the old generation may drain {_default('reload_grace')}")
    reload.add_argument("--livereload", action="store_true",
                        help="reload browser pages when a new generation is serving")

    logs = parser.add_argument_group("logging")
    logs.add_argument("--log-level",
                      choices=["critical", "error", "warning", "info", "debug", "trace"],
                      help=f"log level {_default('log_level')}")
    logs.add_argument("--access-log", action=flag,
                      help=f"log each request {_default('access_log')}")
    logs.add_argument("--use-colors", action=flag,
                      help="colour the log output (default: when on a terminal)")
    logs.add_argument("--tui", choices=["auto", "on", "off"],
                      help=f"live terminal dashboard {_default('tui')}")
    logs.add_argument("--log-format", choices=["text", "json"],
                      help=f"lifecycle output format {_default('log_format')}")
    return parser


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    return code if isinstance(code, int) else (0 if code is None else 1)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code instead of exiting, so it is testable."""
    try:
        namespace = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (exit 2, usage already printed)
        return _exit_code(exc)
    try:
        config = load_config(vars(namespace), environ=os.environ)
        return serve(config, display=make_display, standby=True)
    except DevserveError as err:
        print(f"{PROG}: error: {err.one_line()}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return _EXIT_INTERRUPTED
