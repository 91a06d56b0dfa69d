"""Logging set-up: uvicorn-style ``LEVEL:    message`` lines on stderr, plus a TRACE level."""

from __future__ import annotations

import logging
import sys

from devserve.config import Config

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.levelprefix = f"{record.levelname}:".ljust(10)
        return super().format(record)


def configure_logging(config: Config) -> None:
    """Route devserve's loggers to stderr at ``--log-level``; access log only if enabled."""
    level = _LEVELS[config.log_level]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(levelprefix)s%(message)s"))
    for name in ("devserve", "devserve.error", "devserve.access"):
        logger = logging.getLogger(name)
        logger.handlers = [handler] if name == "devserve" else []
        logger.propagate = name != "devserve"
        logger.setLevel(level)
    access = logging.getLogger("devserve.access")
    if not config.access_log:
        access.setLevel(logging.WARNING)
