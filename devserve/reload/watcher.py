"""File watcher on watchfiles, in its own thread, with ignored trees pruned *before* watching.

watchfiles watches a directory recursively by default, which puts an inotify watch on every
directory under ``.venv`` or ``node_modules`` and wakes on every ``pip install``. Instead we walk
the roots ourselves, skip ignored trees, and watch each remaining directory non-recursively. A new
directory restarts the watch with it included (its files are scanned, so nothing written into it
before the watch was added is missed). Batches end after a quiet period (``--reload-delay``) so a
half-written file never triggers a reload.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("devserve.error")

DEFAULT_INCLUDES = (
    "*.py", "*.pyi", ".env", ".env.*", "*.env", "*.html", "*.jinja", "*.jinja2", "*.j2",
    "*.toml", "*.yaml", "*.yml", "*.cfg", "*.ini",
)
DEFAULT_EXCLUDED_DIRS = frozenset({
    ".git", ".hg", ".svn", ".venv", "venv", "env", "node_modules", "__pycache__", ".mypy_cache",
    ".pytest_cache", ".ruff_cache", ".tox", ".nox", ".hypothesis", ".idea", ".vscode", "build",
    "dist", "site-packages", ".eggs",
})
DEFAULT_EXCLUDED_FILES = (
    "*.log", "*.sqlite3", "*.db", "*.db-*", "*.db.*", "*.sw?", "*~", ".#*", "#*#", "*.bak",
    "*.tmp", "4913", "*.pyc", "*.pyo",
)
MAX_BATCH_WAIT_MS = 1600
POLL_MS = 10  # how often the notifier looks for new events while a batch may be open


@dataclass(frozen=True)
class ChangeSet:
    """One debounced batch of changed files (absolute paths)."""

    paths: tuple[Path, ...]


class PathFilter:
    """Decides which directories are walked and which files can trigger a reload."""

    def __init__(self, includes: Iterable[str] = (), excludes: Iterable[str] = ()) -> None:
        self.includes = tuple(DEFAULT_INCLUDES) + tuple(includes)
        user_excludes = tuple(excludes)
        self.excluded_dirs = set(DEFAULT_EXCLUDED_DIRS)
        self.dir_globs = tuple(g.rstrip("/") for g in user_excludes)
        self.file_excludes = DEFAULT_EXCLUDED_FILES + user_excludes

    def dir_ignored(self, name: str) -> bool:
        if name in self.excluded_dirs or name.endswith(".egg-info"):
            return True
        return any(fnmatch.fnmatch(name, g) for g in self.dir_globs)

    def file_wanted(self, path: Path, roots: Iterable[Path]) -> bool:
        name = path.name
        if any(fnmatch.fnmatch(name, g) for g in self.file_excludes):
            return False
        for root in roots:
            if path.is_relative_to(root):
                rel = path.relative_to(root)
                if any(self.dir_ignored(part) for part in rel.parts[:-1]):
                    return False
                rel_str = rel.as_posix()
                if any(fnmatch.fnmatch(rel_str, g) for g in self.file_excludes):
                    return False
                break
        return any(fnmatch.fnmatch(name, g) for g in self.includes)


def watched_dirs(roots: Iterable[Path], path_filter: PathFilter) -> list[Path]:
    """Every directory under *roots* outside ignored trees (which are never descended into)."""
    found: list[Path] = []
    seen: set[Path] = set()
    for root in roots:
        for dirpath, dirnames, _ in os.walk(root):
            dirnames[:] = [d for d in dirnames if not path_filter.dir_ignored(d)]
            path = Path(dirpath)
            if path not in seen:
                seen.add(path)
                found.append(path)
    return found


class Watcher:
    """Runs in a daemon thread; calls ``on_change(ChangeSet)`` for each debounced batch."""

    def __init__(
        self,
        roots: list[Path],
        on_change: Callable[[ChangeSet], None],
        *,
        path_filter: PathFilter | None = None,
        quiet_ms: int = 50,
        force_polling: bool = False,
    ) -> None:
        self.roots = [r.resolve() for r in roots]
        self.on_change = on_change
        self.filter = path_filter or PathFilter()
        self.quiet_ms = max(1, quiet_ms)
        self.force_polling = force_polling
        self.watch_count = 0
        self.started = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="devserve-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _open(self, force_polling: bool) -> tuple[Any, set[Path]]:
        from watchfiles._rust_notify import RustNotify

        dirs = watched_dirs(self.roots, self.filter)
        self.watch_count = len(dirs)
        notify = RustNotify([str(d) for d in dirs], False, force_polling, 300, False, True)
        return notify, set(dirs)

    def _run(self) -> None:
        force_polling = self.force_polling or os.environ.get(
            "WATCHFILES_FORCE_POLLING", ""
        ).lower() not in ("", "0", "false", "no")
        debounce = max(MAX_BATCH_WAIT_MS, self.quiet_ms * 4)
        notify: Any = None
        try:
            while not self._stop.is_set():
                try:
                    if notify is None:
                        notify, known = self._open(force_polling)
                        self.started.set()  # every watch is registered from here on
                    raw = self._next_batch(notify, debounce)
                    if raw is None:
                        return
                    if not raw:
                        continue
                    files, new_dirs = self._split(raw, known)
                    if new_dirs:
                        # Watch the new tree *before* acting on the batch, then take what the
                        # old notifier still holds, so no edit falls between the two.
                        old = notify
                        notify, known = self._open(force_polling)
                        leftover = old.watch(debounce, 1, 1, self._stop)
                        old.close()
                        if isinstance(leftover, set):
                            files |= self._split(leftover, known)[0]
                        files |= self._scan(new_dirs)
                    if files:
                        self.on_change(ChangeSet(tuple(sorted(files))))
                except Exception:
                    logger.exception("File watcher failed; restarting it")
                    if notify is not None:
                        notify.close()
                        notify = None
                    if self._stop.wait(1.0):
                        return
        finally:
            if notify is not None:
                notify.close()

    def _next_batch(self, notify: Any, debounce: int) -> set[tuple[int, str]] | None:
        """Changes once ``quiet_ms`` passed without a new one; None when stopped.

        RustNotify ends a batch after ``step`` ms of quiet but only looks every ``step`` ms, so
        a 50 ms step means 50-100 ms of latency. We poll at ``POLL_MS`` and extend the batch
        ourselves until the full quiet period has passed since the last change.
        """
        step = min(POLL_MS, self.quiet_ms)
        raw = notify.watch(debounce, step, 1000, self._stop)
        if raw == "stop":
            return None
        if isinstance(raw, str):  # "timeout" or "signal": nothing yet
            return set()
        batch: set[tuple[int, str]] = set(raw)
        extra = self.quiet_ms - step
        while extra > 0:
            more = notify.watch(debounce, step, extra, self._stop)
            if more == "stop":
                return None
            if isinstance(more, str):
                break  # quiet for the rest of the period
            batch |= more
        return batch

    def _split(self, batch: set[tuple[int, str]], known: set[Path]
               ) -> tuple[set[Path], list[Path]]:
        files: set[Path] = set()
        new_dirs: list[Path] = []
        for _change, raw in batch:
            path = Path(raw)
            if path.is_dir():
                if path not in known and not self.filter.dir_ignored(path.name):
                    new_dirs.append(path)
            elif self.filter.file_wanted(path, self.roots):
                files.add(path)
        return files, new_dirs

    def _scan(self, new_dirs: list[Path]) -> set[Path]:
        """Files already inside directories created before their watch existed."""
        found: set[Path] = set()
        for d in watched_dirs(new_dirs, self.filter):
            try:
                for entry in d.iterdir():
                    if entry.is_file() and self.filter.file_wanted(entry, self.roots):
                        found.add(entry)
            except OSError:
                continue
        return found
