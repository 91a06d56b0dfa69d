"""WSGI app for the reload tests: copied into ``tmp_path`` as a module and its ``VERSION`` line
rewritten to simulate an edit. Responses carry ``x-version``, ``x-worker`` (process/thread name:
``devserve-g<G>-w<S>`` names the generation) and ``x-pid``, like ``sup_app.py``.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

VERSION = "v1"  # <- rewritten by the reload tests


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    worker = f"{multiprocessing.current_process().name}/{threading.current_thread().name}"
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("X-Version", VERSION),
        ("X-Worker", worker),
        ("X-Pid", str(os.getpid())),
    ])
    return [VERSION.encode()]
