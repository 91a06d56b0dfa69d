"""devserve: a pure-Python ASGI server built for the edit-save-refresh loop.

Public API: :func:`run`, :class:`Config`, ``__version__``. Everything else is internal.
"""

from __future__ import annotations

from typing import Any

from devserve.config import Config, load_config
from devserve.display import make_display
from devserve.server import serve

__all__ = ["Config", "__version__", "run"]

__version__ = "0.1.0.dev0"


def run(app: Any, **options: Any) -> int:
    """Serve *app* (an ASGI callable or a ``"module:attr"`` import string) until shut down.

    Options use the :class:`Config` field names (``port=8001``, ``workers=2``) and take
    precedence over ``DEVSERVE_*`` variables and ``[tool.devserve]``. Returns the exit code.
    """
    config = load_config({**options, "app": app}, source_name="devserve.run()")
    return serve(config, display=make_display)
