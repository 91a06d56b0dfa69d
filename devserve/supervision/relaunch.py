"""Serving from a fresh process: the composition root's side of an escalation, and of a
``[tool.devserve]`` change.

- An edit only a fresh process can take (:mod:`.escalate`) goes to a *standby* when this
  platform and configuration allow one (:mod:`.standby`: Linux, one TCP listener, started from
  the CLI): it imports the edit while this process serves, then this process drains, hands it
  the listener and becomes its relay (:mod:`.relay`). Save → serve for a Django model edit is the
  standby's import plus the drain, not a whole interpreter start twice.
- Otherwise, and for a ``[tool.devserve]`` change (the command line's configuration itself
  changed): the edit is checked in a fresh interpreter (:mod:`.check`), then this process
  re-``exec``s devserve with the same command line once its Supervisor has stopped. The
  listening socket stays open across the ``exec`` (a duplicate is kept, ``DEVSERVE_FD``); a
  Unix-domain socket is bound again instead (its path is the address).

Either way connections arriving meanwhile wait in the kernel backlog, never refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing import resource_tracker

from devserve.config import Config
from devserve.reload.importer import FreshProcessNeeded
from devserve.supervision import relay, template
from devserve.supervision.check import check_in_fresh_process
from devserve.supervision.ipc import Failed
from devserve.supervision.standby import GONE, Go, Standby

CHECK_TIMEOUT = 60.0


def standby_supported(config: Config) -> bool:
    """A standby takes one TCP listener over a Unix socket and its relay needs Linux's
    subreaper; HTTP/3's UDP socket and a Unix-domain listener take the ``exec`` path, and so
    does everything with pre-warmed processes turned off (``DEVSERVE_NO_TEMPLATE=1``)."""
    return template.enabled() and not config.uds and not config.http3


class Relaunch:
    """Implements the Supervisor's ``FreshStart``; :meth:`finish` runs once ``run()`` returned.
    *stop*: asks the Supervisor to stop without the shutdown delay, saying why."""

    def __init__(self, config: Config, sock: socket.socket, stop: Callable[[str], None], *,
                 standby: bool, relay_fd: int | None = None,
                 successor: Standby | None = None) -> None:
        self._config = config
        self._sock = sock
        self._stop = stop
        self._standby_allowed = standby and standby_supported(config)
        self._standby = successor if self._standby_allowed else None
        if successor is not None and self._standby is None:
            successor.close()
        self._prepared = False  # the standby has imported the edit
        self._kept: socket.socket | None = None
        self._lock = threading.Lock()
        self._relay_fd = relay_fd  # this server was handed over to: announce successors there
        self.requested = False

    def keep_standby(self) -> None:
        """Have a standby waiting for the next edit that needs one (started in the background,
        it imports the libraries meanwhile)."""
        with self._lock:
            if not self._standby_allowed or self.requested:
                return
            if self._standby is None:
                self._standby = Standby.spawn()
            self._standby.prewarm()  # a forked one learns what the app imported since

    # -- FreshStart --------------------------------------------------------------------------
    def prepare(self, need: FreshProcessNeeded, generation: int) -> Failed | None:
        """Import the app and the loaded modules in a fresh process: None when it can serve
        them."""
        started = time.monotonic()
        self.keep_standby()  # the first escalation of a session starts one now
        standby = self._standby
        if standby is None:
            return check_in_fresh_process(self._config, need.modules, CHECK_TIMEOUT)
        go = Go(dict(os.environ), need.modules, generation, started, need.message)
        failed = standby.prepare(go, CHECK_TIMEOUT)
        if failed is GONE:  # it died (was killed?) before answering: once more, afresh
            with self._lock:
                self._standby = standby = Standby.spawn()
            standby.prewarm()
            failed = standby.prepare(go, CHECK_TIMEOUT)
        if failed is None:
            self._prepared = True
            return None
        with self._lock:
            self._standby = None
        self.keep_standby()  # for the fix
        return failed

    def start(self, reason: str) -> None:
        self.request()
        self._stop("handing over to a fresh process")

    def request(self) -> None:
        """Serve from a fresh process once the Supervisor has stopped."""
        with self._lock:
            if not self.requested:
                self.requested = True
                if not self._config.uds:
                    self._kept = self._sock.dup()

    # -- after run() -------------------------------------------------------------------------
    def finish(self) -> None:
        """Hand over to the prepared standby and relay it, or re-``exec`` devserve. Returns
        only if neither was asked for."""
        if not self.requested:
            return
        standby = self._standby
        if self._prepared and standby is not None and self._kept is not None:
            self._hand_over(standby, self._kept)
        self.close()
        self._reexec()

    def _hand_over(self, standby: Standby, listener: socket.socket) -> None:
        """Give *standby* the listener; this process then relays it or, already relayed,
        announces it and exits. Returns only when the standby is gone."""
        logging.shutdown()
        if self._relay_fd is not None:
            if standby.hand_over(listener, self._relay_fd):
                relay.announce(self._relay_fd, standby.pid)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)  # the relay adopts the standby (subreaper) and reaps this one
            return
        read_fd, write_fd = relay.pipe()
        if standby.hand_over(listener, write_fd):
            os.close(write_fd)
            relay.become_relay(standby.pid, read_fd)
        os.close(read_fd)
        os.close(write_fd)

    def close(self) -> None:
        """The standby is not needed: it exits."""
        with self._lock:
            standby, self._standby = self._standby, None
        if standby is not None:
            standby.close()

    def _reexec(self) -> None:
        env = dict(os.environ)
        if self._kept is not None:
            fd = self._kept.fileno()
            if self._config.fd is not None:  # an --fd N on the command line names it again
                os.dup2(fd, self._config.fd)
                fd = self._config.fd
            os.set_inheritable(fd, True)
            env["DEVSERVE_FD"] = str(fd)
        argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
        _reap_children()
        logging.shutdown()
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)


def _reap_children() -> None:
    """Children of this image would outlive the ``exec`` as zombies nobody waits for: stop
    multiprocessing's resource tracker (started by the fresh-process check) and reap."""
    tracker = getattr(resource_tracker, "_resource_tracker", None)
    stop = getattr(tracker, "_stop", None)
    if callable(stop):
        stop()
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
