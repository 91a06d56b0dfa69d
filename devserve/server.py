"""Composition root: config → logging → app → sockets → Supervisor, and the exit code.

Nothing imports this module except the CLI and :func:`devserve.run`; it wires the parts and owns
the order of start-up and teardown.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

from devserve.config import Config, read_env_file
from devserve.errors import ConfigError
from devserve.importer import load_app, reimport_app
from devserve.logs import configure_logging
from devserve.net.sockets import bind_socket, describe_address
from devserve.supervisor import Supervisor, choose_mode

logger = logging.getLogger("devserve.error")


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.ssl_certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.ssl_certfile, config.ssl_keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("--ssl-certfile", f"could not load the certificate: {exc}") from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def serve(config: Config) -> int:
    """Run the server described by *config* until it is stopped; return the exit code."""
    configure_logging(config)
    if config.env_file:
        for key, value in read_env_file(config.env_file).items():
            os.environ.setdefault(key, value)
    app_path = config.app if isinstance(config.app, str) else None
    mode, reason = choose_mode(config, app_is_object=app_path is None)
    loaded = load_app(config.app, app_dir=config.app_dir, factory=config.factory,
                      interface=config.interface)
    ssl_context = _ssl_context(config)
    sock = bind_socket(config)
    try:
        url = describe_address(sock, "https" if ssl_context else "http")
        logger.info("Listening on %s (Press CTRL+C to quit)", url)
        logger.info("Worker mode: %s, %d worker%s (%s)", mode, config.workers,
                    "" if config.workers == 1 else "s", reason)
        supervisor = Supervisor(config, loaded.app, mode=mode, ssl_context=ssl_context,
                                app_path=app_path)
        supervisor.mode_reason = reason
        if mode == "thread" and app_path is not None:
            dirs = [Path(config.app_dir)]
            supervisor.app_loader = lambda: reimport_app(
                app_path, dirs=dirs, app_dir=config.app_dir, factory=config.factory,
                interface=config.interface,
            ).app
        code = supervisor.run([sock])
        logger.info("Finished server process [%d]", os.getpid())
        return code
    finally:
        sock.close()
        if config.uds:
            Path(config.uds).unlink(missing_ok=True)
