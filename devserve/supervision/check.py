"""The fresh-process check of an edit the running process cannot take (see :mod:`.escalate`).

A bare interpreter imports the app and every project module the running process had loaded
(lazily imported views included), compiling them from source, and reports
:class:`~.ipc.Ready` or :class:`~.ipc.Failed` (message, traceback, file:line) on a pipe of its
own. It is started with ``python -c`` rather than multiprocessing's spawn, which would first
re-import the parent's ``__main__`` (the CLI: the whole server and display, ~0.5 s); it imports
only the app loader and the messages (see ``BARE_PACKAGE``).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

from devserve.config import Config
from devserve.errors import DevserveError
from devserve.logs import configure_logging
from devserve.reload.importer import LoadedApp, load_app_fresh
from devserve.supervision.ipc import Channel, Failed, Ready

# The child runs the check without the package's __init__ (the public ``devserve.run`` imports
# the server and the display, ~0.5 s the check does not use): ``devserve`` is registered as a
# bare package whose submodules import as usual.
BARE_PACKAGE = ("import importlib.machinery, sys, types; "
                "spec = importlib.machinery.PathFinder.find_spec('devserve'); "
                "package = types.ModuleType('devserve'); "
                "package.__path__ = list(spec.submodule_search_locations); "
                "package.__spec__ = spec; sys.modules['devserve'] = package; ")
# Its first step: the parent's sys.path (where the project and devserve are found), then the
# check itself. Argument: the fd of the result pipe.
BOOT = ("import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); " + BARE_PACKAGE
        + "from devserve.supervision.check import check_main; "
        "check_main(*pickle.load(sys.stdin.buffer), int(sys.argv[1]))")


NO_ANSWER = Failed("the fresh process did not finish importing the app")
EXIT_GRACE = 5.0  # seconds a child that answered gets to exit before it is killed


def check_in_fresh_process(config: Config, modules: tuple[str, ...], timeout: float
                           ) -> Failed | None:
    """Import the app and *modules* in a fresh interpreter: None when they import cleanly,
    else what failed (``NO_ANSWER`` when the child said nothing within *timeout*)."""
    read_fd, write_fd = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", BOOT, str(write_fd)], stdin=subprocess.PIPE,
            pass_fds=(write_fd,))
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    conn = Connection(read_fd)
    try:
        assert process.stdin is not None
        with process.stdin:
            pickle.dump(list(sys.path), process.stdin)
            pickle.dump((config, modules), process.stdin)
        return _outcome(conn, timeout)
    except BrokenPipeError:
        return NO_ANSWER  # it died before reading what to check
    finally:
        conn.close()
        try:
            process.wait(EXIT_GRACE)  # the timeout was spent waiting for its answer
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _outcome(conn: Connection, timeout: float) -> Failed | None:
    deadline = time.monotonic() + timeout
    while conn.poll(max(0.0, deadline - time.monotonic())):
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if isinstance(message, Ready):
            return None
        if isinstance(message, Failed):
            return message
    return NO_ANSWER


def project_dirs(config: Config) -> list[Path]:
    """Where the project's own modules live (the watched dirs and the app dir)."""
    return [Path(d) for d in (*config.reload_dirs, config.app_dir)]


def load_project_fresh(config: Config, preload: tuple[str, ...] = ()) -> LoadedApp:
    """Import the app compiling project modules from source, then *preload* (the modules a
    previous generation had loaded; see :func:`~devserve.reload.importer.load_app_fresh`)."""
    return load_app_fresh(config.app, dirs=project_dirs(config), app_dir=config.app_dir,
                          factory=config.factory, interface=config.interface, preload=preload)


def check_main(config: Config, modules: tuple[str, ...], fd: int) -> None:
    """In the child: import the app and *modules* from source, report, exit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl+C ends the check with the server
    channel = Channel(Connection(fd))
    configure_logging(config)
    try:
        load_project_fresh(config, modules)
    except DevserveError as exc:
        channel.send(Failed(exc.one_line(), getattr(exc, "traceback_text", None),
                            getattr(exc, "location", None)))
        raise SystemExit(exc.exit_code) from None
    channel.send(Ready())
