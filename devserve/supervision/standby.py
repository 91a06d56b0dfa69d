"""A standby devserve: the fresh process an escalated edit is served from, started in advance.

Thread mode re-imports in place, but some edits need a fresh process (Django models, settings;
see :mod:`.escalate`). Re-``exec``-ing devserve pays for the interpreter, devserve, every library
and the project (1-2 s for a Django project), and the edit must first be checked in yet another
fresh interpreter (a broken edit must leave the running generation serving). A *standby* is the
same command line started early as a child: it imports devserve and the libraries the running
server has loaded (:func:`~.prewarm.import_libraries`: never project code), then waits. For an
edit:

1. :meth:`Standby.prepare` sends it :class:`Go` (the environment, and the project modules the
   running server had loaded); it imports the app and those modules, compiled from source, and
   answers :class:`~.ipc.Ready` or :class:`~.ipc.Failed` (then it exits: the running server
   keeps serving, reports the error and starts another standby). This replaces the check.
2. Ready: the running server drains, closes its display, :meth:`Standby.hand_over` passes the
   listening socket (``SCM_RIGHTS``), and the server becomes the relay of the standby (the
   first hand-over of a session) or tells the relay about it and exits (:mod:`.relay`). The
   standby serves as if started with ``--fd``; connections arriving meanwhile wait in the
   kernel's backlog, never refused.

When told to import an edit, a standby first forks a copy of itself (still free of project
code): the standby of the server it is about to become, warm at once, so edits that need a fresh
process back to back never wait for an interpreter to start.

Until it is told to serve, a standby ignores Ctrl+C (its server handles it) and exits quietly
when its server's end of the socket closes (the server stopped, was killed, or re-``exec``-ed).
It never holds the listener before the hand-over, so a stopping server's closed listener refuses
connections as it should. The child side is :class:`StandbyLink` (in ``devserve.server``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from devserve.errors import DevserveError
from devserve.lifecycle import Event, GenerationPromoted
from devserve.supervision import prewarm
from devserve.supervision.ipc import Failed, Ready

ENV = "DEVSERVE_STANDBY"  # the fd of the standby's end of its socket
NO_ANSWER = Failed("the fresh process did not finish importing the app")
GONE = Failed("the fresh process exited before it had imported the app")
EXIT_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class Prewarm:
    """First message: the libraries to import while waiting."""

    modules: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Go:
    """Import the app now, with this environment, and these project modules after it; then
    serve *generation*, the reload begun at *started* (``time.monotonic()``) for *reason*."""

    environ: Mapping[str, str]
    modules: tuple[str, ...]
    generation: int
    started: float
    reason: str


@dataclass(frozen=True, slots=True)
class Serve:
    """The listener follows (its fd, ``SCM_RIGHTS``): serve it."""


class Standby:
    """The server's side: one standby process (a child of this one), used at most once."""

    def __init__(self, pid: int, sock: socket.socket,
                 process: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self._sock = sock
        self._process = process
        self._conn = Connection(os.dup(sock.fileno()))
        self._lock = threading.Lock()

    @classmethod
    def spawn(cls) -> Standby:
        """Start this process's command line as a standby."""
        parent, child = socket.socketpair()
        env = dict(os.environ)
        env[ENV] = str(child.fileno())
        argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
        try:
            process = subprocess.Popen([sys.executable, *argv[1:]], env=env,
                                       pass_fds=(child.fileno(),))
        finally:
            child.close()
        return cls(process.pid, parent, process)

    def prewarm(self) -> None:
        """Have it import the libraries this process has loaded (those it lacks)."""
        with contextlib.suppress(OSError):
            self._conn.send(Prewarm(prewarm.library_modules()))

    def prepare(self, go: Go, timeout: float) -> Failed | None:
        """Have it import the app and *go*'s modules: None when it is ready to serve, else
        what failed (:data:`GONE` when it exited without a word; the standby is then gone)."""
        with self._lock:
            try:
                self._conn.send(go)
                if not self._conn.poll(timeout):
                    self.close()
                    return NO_ANSWER
                message = self._conn.recv()
            except (EOFError, OSError):
                message = GONE
            if isinstance(message, Ready):
                return None
            self.close()
            return message if isinstance(message, Failed) else GONE

    def hand_over(self, listener: socket.socket, relay_fd: int) -> bool:
        """Pass *listener* to the prepared standby, and the pipe to announce its own successor
        on (see :mod:`.relay`): from now on it serves."""
        try:
            self._conn.send(Serve())
            socket.send_fds(self._sock, [b"L"], [listener.fileno(), relay_fd])
        except OSError:
            return False
        return True

    def close(self) -> None:
        """Not needed (any more): it exits when its end of the socket closes."""
        self._conn.close()
        self._sock.close()
        if not self._reaped(EXIT_GRACE):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._reaped(EXIT_GRACE)

    def _reaped(self, timeout: float) -> bool:
        if self._process is not None:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0] != 0:
                    return True
            except ChildProcessError:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


class StandbyLink:
    """The standby's side (this process was started by :class:`Standby`)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._conn = Connection(os.dup(sock.fileno()))
        self.successor: Standby | None = None  # forked at Go: the next server's standby

    @classmethod
    def from_env(cls) -> StandbyLink | None:
        fd = os.environ.pop(ENV, None)
        if fd is None:
            return None
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is for the serving process
        return cls(socket.socket(fileno=int(fd)))

    def _receive(self) -> object:
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # its server is gone or no longer needs it: nothing to say

    def wait_for_go(self) -> Go:
        """Import the libraries, wait for the edit; take its environment."""
        while True:
            message = self._receive()
            if isinstance(message, Prewarm):
                prewarm.import_libraries(message.modules)
                gc.collect()
                gc.freeze()  # shared with the standby forked from this one, not copied
            elif isinstance(message, Go):
                if self._fork_successor():
                    continue  # this is the successor: wait for its own edit
                os.environ.clear()
                os.environ.update(message.environ)
                return message

    def _fork_successor(self) -> bool:
        """Before importing any project code, fork the standby of the server this process is
        about to become: already warm, so back-to-back edits needing a fresh process do not
        wait for a new interpreter. True in the forked child. Not done when a library started
        a thread (the child would lack it); that server spawns a new standby instead."""
        if threading.active_count() != 1:
            return False
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            ours.close()
            self._conn.close()
            self._sock.close()
            self._sock, self._conn = theirs, Connection(os.dup(theirs.fileno()))
            return True
        theirs.close()
        self.successor = Standby(pid, ours)
        return False

    def failed(self, exc: DevserveError) -> None:
        self._conn.send(Failed(exc.one_line(), getattr(exc, "traceback_text", None),
                               getattr(exc, "location", None)))

    def wait_for_listener(self) -> tuple[int, int]:
        """Report ready; once the old server has drained, the fds of the listener and of the
        relay's pipe."""
        self._conn.send(Ready())
        while not isinstance(self._receive(), Serve):
            pass
        _, fds, _, _ = socket.recv_fds(self._sock, 1, 2)
        if len(fds) != 2:
            os._exit(0)
        self._conn.close()
        self._sock.close()
        os.set_inheritable(fds[1], False)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return fds[0], fds[1]


class CatchUp:
    """A lifecycle sink for the server a standby became: its watcher started only after it had
    imported the project, so a file saved in between (the second file of a "save all", a
    formatter's rewrite) would go unnoticed until the next save. Once its first generation
    serves, the project files changed since they were read are reloaded."""

    def __init__(self, changed: Callable[[], list[Path]],
                 reload: Callable[[list[Path]], None]) -> None:
        self._changed = changed
        self._reload = reload
        self._done = False

    def emit(self, event: Event) -> None:
        if self._done or not isinstance(event, GenerationPromoted):
            return
        self._done = True
        changed = self._changed()
        if changed:  # not on this thread: it holds the Supervisor's lifecycle lock
            threading.Thread(target=self._reload, args=(changed,), name="devserve-catch-up",
                             daemon=True).start()
