"""File watcher on watchfiles, in its own thread, with ignored trees pruned *before* watching.

watchfiles watches a directory recursively by default, which puts an inotify watch on every
directory under ``.venv`` or ``node_modules`` and wakes on every ``pip install``. Instead we walk
the roots ourselves, skip ignored trees, and watch each remaining directory non-recursively. A new
directory restarts the watch with it included (its files are scanned, so nothing written into it
before the watch was added is missed).

A batch starts on the first change and closes once the quiet period (``--reload-delay``) passed
without another one, so a multi-file save is one batch. A half-written file must never reach the
reloader, and a quiet period alone cannot promise that (an editor descheduled mid-save pauses as
long as it likes), so a closing batch is also *settled*: no changed file may still be open for
writing by another process (Linux: a read lease cannot be taken on it; elsewhere: its size and
mtime must hold still for one more poll), and none may be missing unless it was really deleted
(vim renames the original away before writing the new file). Until then the batch stays open,
taking further changes, for at most ``SETTLE_MAX_MS``. The reload reads source through
:func:`read_whole` for the same reason: the next save may begin while a reload reads the file.
"""

from __future__ import annotations

import errno
import fnmatch
import io
import logging
import os
import signal
import stat
import threading
import time
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
MAX_BATCH_WAIT_MS = 1600  # a batch closes by then even if relevant changes keep coming
CALL_MS = 50  # one notifier call returns by then even if (irrelevant) changes keep coming
POLL_MS = 5  # how often the notifier looks for new changes
SETTLE_MAX_MS = 500  # a file still open for writing or missing after this is taken as it is
BURST_QUIET_MS = 50  # quiet period once a batch holds several files: a tool at work may pause
RECENT_S = 2  # read_whole: a file untouched this long is not being written, no probe needed
ADDED = 1  # watchfiles' Change.added: a path both added and gone in one batch was a temp file

try:
    import fcntl

    _F_SETLEASE: int | None = fcntl.F_SETLEASE
    _F_SETSIG: int = fcntl.F_SETSIG
except (ImportError, AttributeError):  # not Linux
    _F_SETLEASE = None
    _F_SETSIG = 0


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


def open_for_writing(path: Path) -> bool | None:
    """Whether anyone (an editor, a formatter) has *path* open for writing; None: cannot tell.

    Linux refuses a read lease (``EAGAIN``) on a file anybody has open for writing: a probe of a
    few microseconds, taken and released at once. Should a writer open the file within those
    microseconds, the kernel signals the lease holder; that signal is SIGURG (ignored unless
    handled) instead of the default SIGIO, which would terminate the server. Needs the file's
    owner (or ``CAP_LEASE``) and a filesystem with leases; otherwise: None.
    """
    if _F_SETLEASE is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        fcntl.fcntl(fd, _F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_RDLCK)
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
        return False
    except OSError as exc:
        return True if exc.errno == errno.EAGAIN else None
    finally:
        os.close(fd)


def read_whole(path: str) -> bytes:
    """*path*'s bytes as its writer left them: a reload reading a file while the next save
    rewrites it (a formatter saving again) would compile half a file.

    A file modified in the last ``RECENT_S`` is read once no other process has it open for
    writing; any file is read again if it changed during the read. Waits at most
    ``SETTLE_MAX_MS`` (also for a file briefly missing, vim's backup dance), then reads.
    """
    give_up = time.monotonic() + SETTLE_MAX_MS / 1000
    while True:
        waited = time.monotonic() < give_up
        try:
            before = os.stat(path)
        except FileNotFoundError:
            if not waited:
                raise
            time.sleep(POLL_MS / 1000)
            continue
        recent = time.time_ns() - before.st_mtime_ns < RECENT_S * 1_000_000_000
        if waited and recent and open_for_writing(Path(path)):
            time.sleep(POLL_MS / 1000)
            continue
        with io.open_code(path) as f:
            data = f.read()
        after = os.stat(path)
        unchanged = ((before.st_ino, before.st_size, before.st_mtime_ns)
                     == (after.st_ino, after.st_size, after.st_mtime_ns))
        if (unchanged and len(data) == after.st_size) or not waited:
            return data


class Settling:
    """Which changed files are not ready to be read yet, for one batch (see the module doc)."""

    def __init__(self, path_filter: PathFilter, roots: list[Path]) -> None:
        self.filter = path_filter
        self.roots = roots
        self._stats: dict[Path, tuple[int, int]] = {}  # last look at files the probe can't judge

    def pending(self, batch: set[tuple[int, str]]) -> list[Path]:
        added = {raw for change, raw in batch if change == ADDED}
        waiting: list[Path] = []
        for raw in {raw for _, raw in batch}:
            path = Path(raw)
            if not self.filter.file_wanted(path, self.roots):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                if raw not in added:  # gone, not a temp file that came and went: mid-replace?
                    waiting.append(path)
                continue
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                continue
            busy = open_for_writing(path)
            if busy is None:  # no probe here: it must hold still for one poll
                now = (st.st_size, st.st_mtime_ns)
                busy = self._stats.get(path) != now
                self._stats[path] = now
            if busy:
                waiting.append(path)
        return waiting


class Watcher:
    """Runs in a daemon thread; calls ``on_change(ChangeSet)`` for each debounced batch."""

    def __init__(
        self,
        roots: list[Path],
        on_change: Callable[[ChangeSet], None],
        *,
        path_filter: PathFilter | None = None,
        quiet_ms: int = 10,
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
        """The next batch (see the module doc); an empty set on an idle timeout or when only
        noise changed, None when stopped.

        Noise (a log file, a database journal, ``.pyc`` files: what no reload wants) is dropped
        as it arrives: a file written every few ms would otherwise keep one notifier call from
        ever seeing ``POLL_MS`` of silence and hold an edit until ``debounce`` ran out. So each
        call returns within ``CALL_MS``, and only relevant changes restart the quiet period.
        Later calls start from an empty set, so they also see a file written again.
        """
        raw = notify.watch(CALL_MS, POLL_MS, 1000, self._stop)
        if raw == "stop":
            return None
        if isinstance(raw, str):  # "timeout" or "signal": nothing yet
            return set()
        batch = self._relevant(raw)
        if not batch:
            return set()
        settling = Settling(self.filter, self.roots)
        settle_by: float | None = None
        now = time.monotonic()
        give_up = now + debounce / 1000  # changes that never stop: take them so far
        # A call that returned on silence saw POLL_MS without news; one cut short by noise
        # cannot tell when the relevant change came: wait the whole quiet period.
        quiet_until = now + (self._quiet_for(batch) - (POLL_MS if batch == raw else 0)) / 1000
        while True:
            wait_ms = int((quiet_until - time.monotonic()) * 1000)
            if wait_ms > 0:
                more = notify.watch(CALL_MS, POLL_MS, wait_ms, self._stop)
                if more == "stop":
                    return None
                if not isinstance(more, str) and (relevant := self._relevant(more)):
                    batch |= relevant
                    now = time.monotonic()
                    if now >= give_up:
                        return batch
                    quiet_until = now + self._quiet_for(batch) / 1000
                continue
            pending = settling.pending(batch)
            if not pending:
                return batch
            now = time.monotonic()
            if settle_by is None:
                settle_by = now + SETTLE_MAX_MS / 1000
            elif now >= settle_by:
                logger.debug("Reloading although %s may still be written to",
                             ", ".join(str(p) for p in pending))
                return batch
            quiet_until = now + POLL_MS / 1000

    def _relevant(self, raw: set[tuple[int, str]]) -> set[tuple[int, str]]:
        """The changes a reload may want: watched files (also deleted ones) and directories
        (a new one gets watched); not the noise of ignored files."""
        kept: set[tuple[int, str]] = set()
        for change in raw:
            path = Path(change[1])
            if self.filter.file_wanted(path, self.roots) or (
                    path.is_dir() and not self.filter.dir_ignored(path.name)):
                kept.add(change)
        return kept

    def _quiet_for(self, batch: set[tuple[int, str]]) -> int:
        """The quiet period that closes *batch*: ``quiet_ms`` for one saved file (an editor's
        save, settled by :class:`Settling`); at least ``BURST_QUIET_MS`` once several files
        changed, as a formatter or a ``git checkout`` may pause between them."""
        first: str | None = None
        for _, raw in batch:
            if raw != first and self.filter.file_wanted(Path(raw), self.roots):
                if first is not None:
                    return max(self.quiet_ms, BURST_QUIET_MS)
                first = raw
        return self.quiet_ms

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
