"""Process templates: worker processes forked from a pre-warmed interpreter (Linux).

A process generation needs the project's code fresh, but a fresh interpreter also pays for
devserve and every library the app uses (Django, SQLAlchemy, pydantic...): 0.3-1 s per reload.
A *template* is a process that has imported devserve and the libraries (stdlib and
site-packages modules) the previous generation had loaded, and never any project code; a worker
forked from it imports only the project's own modules.

- A template is a ``multiprocessing`` fork server of the launcher's own (``ForkServer``, not the
  module-wide one) preloading :mod:`.prewarm`, which imports the learned module names (read from
  a file named in ``DEVSERVE_PREWARM``) and refuses any module that is not a library's. Workers
  are ``Process`` objects launched through it; their arguments (listener socket, pipe ends)
  travel as with ``spawn``: pickled, the fds passed over the fork server's socket.
- Children report the libraries they have loaded (:class:`~.ipc.LibraryModules`: once ready,
  and again when the next generation is prepared, so imports made at request time count).
  Once a child is ready, if the reports name a module the template lacks, a new template is
  built in the background (not while a generation starts: it would compete for the CPU) and
  swapped in once a probe forked from it exits cleanly; a spawn never waits for one. The old
  template exits when its last child does. The learned list only grows in a session.
- A template goes stale when installed packages change (a site-packages directory's mtime) or
  ``os.environ`` does (``--env-file`` edits): until its replacement is ready, workers are
  spawned. A list whose template could not be built (a library crashed it or started a thread
  at import, which forking would lose) is not tried again; workers are spawned meanwhile.
- Generation 1 is spawned while the first template is built from the libraries the Supervisor
  itself imported when it checked the app; what children import later is learned as above.

Only with ``--reload`` (a server without it starts new workers only after a crash or a
restart, and an idle template would cost memory). Elsewhere (macOS, Windows: no safe ``fork``)
and with ``DEVSERVE_NO_TEMPLATE=1``: ``spawn``.

A forked worker differs from a spawned one in what happened before the project ran: a library
whose import-time behaviour depends on state the project sets before importing it (an
environment variable, a setting) saw the template's state; libraries' import-time warnings are
not repeated; ``atexit`` handlers do not run at exit before Python 3.13 (the ASGI lifespan
shutdown does).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from devserve.supervision import prewarm

if sys.platform == "linux":
    import io
    from multiprocessing import context, forkserver, popen_forkserver, reduction, spawn, util

logger = logging.getLogger("devserve.error")

DISABLE_ENV = "DEVSERVE_NO_TEMPLATE"
PRELOAD = ["devserve.supervision.child", "devserve.supervision.prewarm"]
PROBE_TIMEOUT = 60.0

_SPAWN = multiprocessing.get_context("spawn")
# DEVSERVE_PREWARM is in os.environ only while a template starts: no other process may start then
_ENVIRON_LOCK = threading.Lock()


def enabled() -> bool:
    return sys.platform == "linux" and not os.environ.get(DISABLE_ENV)


def _site_stamp() -> tuple[int, ...]:
    """The library directories' mtimes: installing or removing a package changes one."""
    stamps = []
    for directory in prewarm.LIBRARY_DIRS:
        try:
            stamps.append(os.stat(directory).st_mtime_ns)
        except OSError:
            stamps.append(0)
    return tuple(stamps)


def _probe(conn: Connection) -> None:
    """Runs in a process forked from a new template: sends the template's pid once it has
    imported its list (0 when it did not)."""
    conn.send(os.getppid() if prewarm.warmed else 0)


def _running(pid: int) -> bool:
    """*pid* exists and has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _environ() -> dict[str, str]:
    """What a process started now inherits (but the list a template being built is given)."""
    environ = dict(os.environ)
    environ.pop(prewarm.ENV, None)
    return environ


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


if sys.platform == "linux":

    class _TemplatePopen(popen_forkserver.Popen):
        """Launches a process through its template's fork server (the module-wide one is
        ``popen_forkserver.Popen``'s): the same steps, another server. Whether the process
        has exited is asked of the process itself (a pidfd), its exit status of the template:
        a template that died (OOM killer, a stray ``kill``) would otherwise make its running
        children look dead, and they would be left serving."""

        _fds: list[int]  # what the pickled arguments hold, passed to the fork server
        _exited: int | None = None  # a pidfd, readable once the process has exited

        def _launch(self, process_obj: BaseProcess) -> None:
            assert isinstance(process_obj, _TemplateProcess)
            data = io.BytesIO()
            context.set_spawning_popen(self)  # fds pickled meanwhile go to self._fds
            try:
                reduction.dump(spawn.get_preparation_data(process_obj.name), data)
                reduction.dump(process_obj, data)
            finally:
                context.set_spawning_popen(None)
            self.sentinel, write_end = process_obj.server.connect_to_new_process(self._fds)
            keep = os.dup(write_end)  # the child sees the parent die when this closes
            self.finalizer = util.Finalize(self, _close_fds, (keep, self.sentinel))
            with open(write_end, "wb", closefd=True) as pipe:
                pipe.write(data.getbuffer())
            self.pid = forkserver.read_signed(self.sentinel)
            try:
                self._exited = os.pidfd_open(self.pid)
            except OSError:  # gone already, or a kernel before 5.3: the template tells
                return
            util.Finalize(self, _close_fds, (self._exited,))

        def poll(self, flag: int = os.WNOHANG) -> int | None:
            exited = self._exited
            if self.returncode is None and exited is not None:
                if not wait([exited], 0 if flag == os.WNOHANG else None):
                    return None
                flag = 0  # it exited: the template reports how (255 when it is gone)
            return super().poll(flag)

        def wait(self, timeout: float | None = None) -> int | None:
            exited = self._exited
            if (self.returncode is None and exited is not None and timeout is not None
                    and not wait([exited], timeout)):
                return None
            return super().wait(timeout)

    class _TemplateProcess(context.ForkServerProcess):
        """A process forked from *server*; the child gets no reference to it."""

        def __init__(self, server: forkserver.ForkServer, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.server = server

        @staticmethod
        def _Popen(process_obj: BaseProcess) -> popen_forkserver.Popen:
            return _TemplatePopen(process_obj)

        def __getstate__(self) -> dict[str, Any]:
            state = dict(vars(self))
            state.pop("server", None)
            return state


class Template:
    """One fork server that has imported *modules* (see :mod:`.prewarm`)."""

    def __init__(self, modules: tuple[str, ...]) -> None:
        self.modules = modules
        self.names = frozenset(modules)
        self._server = forkserver.ForkServer()
        self._server.set_forkserver_preload(list(PRELOAD))
        self._stamp = _site_stamp()
        self._environ = _environ()
        self._pid = 0  # the fork server's, once it is known to work

    def build(self) -> bool:
        """Start the fork server and wait until it has imported everything (a probe forked
        from it exits cleanly); False when it did not work."""
        fd, listing = tempfile.mkstemp(prefix="devserve-prewarm-", suffix=".txt")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write("\n".join(self.modules))
            with _ENVIRON_LOCK:
                os.environ[prewarm.ENV] = listing
                try:
                    self._server.ensure_running()
                finally:
                    del os.environ[prewarm.ENV]
            answer, child = multiprocessing.Pipe(duplex=False)
            with answer:
                probe = self.process(_probe, (child,), "devserve-template-probe")
                child.close()
                if answer.poll(PROBE_TIMEOUT):
                    self._pid = answer.recv()
            probe.join(PROBE_TIMEOUT)
            if probe.is_alive():
                probe.kill()
                probe.join()
            return self._pid > 0 and probe.exitcode == 0
        except Exception as exc:  # whatever it was, workers are spawned instead
            logger.debug("process template did not start: %r", exc)
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):  # the template removes it once read
                os.unlink(listing)

    def stale(self) -> str | None:
        """Why it should not be forked from any more (a spawned process would now see
        something else, or it is gone: its fork server would start again, cold), if so."""
        if not _running(self._pid):
            return "its process is gone"
        if self._stamp != _site_stamp():
            return "installed packages changed"
        now = _environ()
        if self._environ != now:
            changed = {k for k in {*now, *self._environ} if now.get(k) != self._environ.get(k)}
            return f"environment variables changed: {', '.join(sorted(changed))}"
        return None

    def process(self, target: Callable[..., object], args: tuple[Any, ...], name: str
                ) -> BaseProcess:
        """Start *target(*args)* in a process forked from this template."""
        process = _TemplateProcess(self._server, target=target, args=args, name=name,
                                   daemon=True)
        process.start()
        return process

    def stop(self) -> threading.Thread:
        """Let the fork server exit once its last child has (in a thread: children of a
        serving generation may run for long); the thread ends when it has."""
        stopper = threading.Thread(target=self._server._stop,  # type: ignore[attr-defined]
                                   name="devserve-template-stop", daemon=True)
        stopper.start()
        return stopper


class Templates:
    """The launcher's worker processes: forked from the current template when there is a
    usable one, else spawned; templates are rebuilt in the background as children report
    libraries the current one lacks."""

    def __init__(self, *, reload: bool) -> None:
        self.enabled = reload and enabled()
        self._lock = threading.Lock()
        self._current: Template | None = None
        self._building = False
        self._pending = False  # asked to rebuild while building: look again once built
        self._closed = False
        self._learned: dict[str, None] = {}  # every library module reported, in order
        self._failed: set[frozenset[str]] = set()  # lists whose template did not work
        self._stopping: list[threading.Thread] = []

    def process(self, target: Callable[..., object], args: tuple[Any, ...], name: str
                ) -> BaseProcess:
        """A started process running *target(*args)*."""
        template = self._usable()
        if template is not None:
            try:
                return template.process(target, args, name)
            except Exception as exc:  # its fork server died, or this Python differs: spawn
                logger.debug("process template failed (%r): spawning", exc)
                self._retire(template)
        process = _SPAWN.Process(target=target, args=args, name=name, daemon=True)
        with _ENVIRON_LOCK:
            process.start()
        return process

    def _usable(self) -> Template | None:
        with self._lock:
            template = self._current
        if template is None:
            return None
        reason = template.stale()
        if reason is not None:
            logger.debug("process template is stale (%s): spawning until it is rebuilt", reason)
            self._retire(template)  # the next report of a ready child builds another
            return None
        return template

    def learn(self, names: tuple[str, ...], *, rebuild: bool = True) -> None:
        """A child reported the library modules it has loaded. *rebuild*: a template that lacks
        some may be built now (not while a generation is starting: it would compete for CPU)."""
        if not self.enabled:
            return
        with self._lock:
            self._learned.update(dict.fromkeys(names))
        if rebuild:
            self._rebuild()

    def _rebuild(self) -> None:
        """Build a template with everything learned, in the background, when the current one
        lacks some of it (or is gone) and no build is under way."""
        with self._lock:
            modules = tuple(self._learned)
            current = self._current
            wanted = frozenset(modules)
            self._pending = self._building
            if (self._building or self._closed or wanted in self._failed
                    or (current is not None and wanted <= current.names)):
                return
            self._building = True
        threading.Thread(target=self._build, args=(Template(modules),),
                         name="devserve-template", daemon=True).start()

    def _build(self, template: Template) -> None:
        ok = template.build()
        with self._lock:
            self._building = False
            old, closed, pending = self._current, self._closed, self._pending
            if ok and not closed:
                self._current = template
            elif not ok:
                self._failed.add(template.names)
        if ok and not closed:
            logger.debug("process template ready: %d library modules preloaded",
                         len(template.modules))
            if old is not None:
                self._retire(old)
            if pending:
                self._rebuild()
        else:
            if not ok:
                logger.debug("process template with %d modules did not start: spawning",
                             len(template.modules))
            self._stop(template)

    def _retire(self, template: Template) -> None:
        with self._lock:
            if self._current is template:
                self._current = None
        self._stop(template)

    def _stop(self, template: Template) -> None:
        stopper = template.stop()
        with self._lock:
            self._stopping = [t for t in self._stopping if t.is_alive()] + [stopper]

    def close(self, timeout: float = 2.0) -> None:
        """After every worker stopped: the templates exit."""
        with self._lock:
            self._closed = True
            current, self._current = self._current, None
        if current is not None:
            self._stop(current)
        deadline = time.monotonic() + timeout
        for stopper in list(self._stopping):
            stopper.join(max(0.0, deadline - time.monotonic()))

