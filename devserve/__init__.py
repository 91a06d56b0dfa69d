"""devserve: a pure-Python ASGI server built for the edit-save-refresh loop.

Public API: :func:`run`, :class:`Config`, ``__version__``. Everything else is internal.

The package root stays light: a process that needs one part — the fresh-process check of an
edit, a worker child — imports that part, not the server and the display (half a second).
"""

from __future__ import annotations

from typing import Any

from devserve.config import Config, load_config

__all__ = ["Config", "__version__", "run"]

__version__ = "0.1.0.dev0"


def run(app: Any, **options: Any) -> int:
    """Serve *app* (an ASGI callable or a ``"module:attr"`` import string) until shut down.

    Options use the :class:`Config` field names (``port=8001``, ``workers=2``) and take
    precedence over ``DEVSERVE_*`` variables and ``[tool.devserve]``. Returns the exit code.
    """
    # The one function-local devserve import (see the module doc and test_architecture).
    from devserve.display import make_display
    from devserve.server import serve

    config = load_config({**options, "app": app}, source_name="devserve.run()")
    return serve(config, display=make_display)
