"""Turn a batch of changed files into the right Supervisor action, cheapest first.

Every batch goes to ``graceful_reload(changed)``; the Supervisor serves it the cheapest way that
can be trusted (:func:`strategy_for` names the kind of batch):

- stylesheets only → ``browser-only``: open pages swap them, no server work;
- templates (and other browser assets: scripts, images) only → ``template-only``: the template
  engines forget compiled templates and open pages reload; no Python is re-imported;
- Python modules and any other included file → a partial, wider or full re-import, or a fresh
  process (see ``reload.importer``);
- the ``--env-file`` → re-read it into ``os.environ``, then a full reload (``changed=None``).
- ``[tool.devserve]`` in ``pyproject.toml`` changed → re-exec devserve with the same arguments
  (its own configuration cannot change under a running Supervisor).
A batch arriving while a reload runs is coalesced by the Supervisor into exactly one follow-up.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Protocol

from devserve.config import Config, read_env_file, read_pyproject
from devserve.lifecycle import LifecycleCollector, ReloadRequested
from devserve.reload.frameworks import is_template
from devserve.reload.watcher import ChangeSet

logger = logging.getLogger("devserve.error")


STYLESHEETS = frozenset({".css"})
BROWSER_ASSETS = frozenset({".js", ".mjs", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp",
                            ".ico", ".woff", ".woff2"})
# Watched in addition to the defaults when --livereload is on: what only browsers need.
BROWSER_INCLUDES = tuple(f"*{suffix}" for suffix in sorted(STYLESHEETS | BROWSER_ASSETS))


class Reloadable(Protocol):
    def graceful_reload(self, changed: Collection[Path] | None = None) -> None: ...

    def shutdown(self, *, delay: bool = True) -> None: ...


def strategy_for(paths: Collection[Path]) -> str:
    """``browser-only`` (stylesheets), ``template-only`` (templates, scripts, images) or
    ``reimport`` (anything else: Python, configuration) for one batch."""
    if paths and all(p.suffix.lower() in STYLESHEETS for p in paths):
        return "browser-only"
    if paths and all(p.suffix.lower() in STYLESHEETS | BROWSER_ASSETS or is_template(p)
                     for p in paths):
        return "template-only"
    return "reimport"


def _devserve_table(pyproject: Path) -> Any:
    try:
        return read_pyproject(pyproject)
    except Exception as exc:  # a half-saved file: treat as "unknown" and compare later
        return ("unreadable", str(exc))


class Reloader:
    """Classifies each ChangeSet and calls the Supervisor."""

    def __init__(
        self,
        supervisor: Reloadable,
        config: Config,
        *,
        collector: LifecycleCollector | None = None,
        pyproject: Path | None = None,
        on_reexec: Callable[[], None] | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.config = config
        self.collector = collector
        self.env_file = Path(config.env_file).resolve() if config.env_file else None
        self.pyproject = pyproject.resolve() if pyproject else None
        self._pyproject_table = _devserve_table(self.pyproject) if self.pyproject else None
        self.on_reexec = on_reexec
        self.last_detect: float | None = None
        self._lock = threading.Lock()

    def __call__(self, changes: ChangeSet) -> None:
        self.handle(changes)

    def handle(self, changes: ChangeSet) -> None:
        with self._lock:
            self.last_detect = time.monotonic()
            paths = list(changes.paths)
            if self.pyproject is not None and self.pyproject in paths:
                table = _devserve_table(self.pyproject)
                if table != self._pyproject_table:
                    self._pyproject_table = table
                    logger.info("[tool.devserve] changed in %s: restarting devserve",
                                _short(self.pyproject))
                    if self.on_reexec is not None:
                        self.on_reexec()
                    self.supervisor.shutdown(delay=False)
                    return
            changed: Collection[Path] | None = paths
            if self.env_file is not None and self.env_file in paths:
                try:
                    os.environ.update(read_env_file(self.env_file))
                except Exception as exc:
                    logger.error("Could not re-read %s: %s", _short(self.env_file), exc)
                changed = None  # any module may read the environment at import: all of them
            strategy = strategy_for(paths)
            if self.collector is not None:
                self.collector.emit(ReloadRequested(trigger=tuple(_short(p) for p in paths),
                                                    strategy=strategy))
        self.supervisor.graceful_reload(changed)


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
