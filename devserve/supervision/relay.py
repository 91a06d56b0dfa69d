"""What the server process a developer started becomes once a fresh devserve serves in its place.

The process a developer (a shell, an IDE, a test, systemd) started must live on until the server
it handed over to exits: it holds the terminal's foreground and its exit status is the server's.
It keeps that role at the cost of a bare interpreter by ``exec``-ing this file as a program (no
site, no devserve), which:

- waits for the current server and exits with its status (128 + N when signal N ended it, as a
  shell reports it);
- is the *subreaper* of everything below it (Linux ``PR_SET_CHILD_SUBREAPER``): a server that
  hands over to the next one writes that one's pid to the relay's pipe and exits, and its
  successor becomes the relay's child. So there is one relay however many hand-overs a session
  sees, and orphans are reaped;
- passes on the signals *sent* to it (``kill``: SIGTERM from a process manager, SIGHUP, a
  SIGINT from a test); the ones a terminal sends on Ctrl+C reach the whole foreground process
  group, the server included, so they are not sent a second time (that would force the stop).

The signals are blocked before the ``exec`` and stay blocked in the program (pending ones wait
for it), so none is lost or acted on by default in between.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import NoReturn

FORWARDED = tuple(getattr(signal, name) for name in  # the ones this platform has
                  ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
                  if hasattr(signal, name))
PR_SET_CHILD_SUBREAPER = 36


def pipe() -> tuple[int, int]:
    """The pipe servers announce their successors on: the read end is the relay's, the write
    end goes to each server (passed on at every hand-over)."""
    read_fd, write_fd = os.pipe()
    os.set_inheritable(read_fd, True)
    return read_fd, write_fd


def announce(write_fd: int, successor: int) -> None:
    """A server under a relay that handed over: its *successor* is the server now."""
    os.write(write_fd, f"{successor}\n".encode())


def become_relay(server: int, read_fd: int) -> NoReturn:
    """Replace this process with the relay of *server* (a child of this process)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-S", "-E", __file__, str(server), str(read_fd)])


def _exit_status(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _announced(read_fd: int) -> list[int]:
    """Pids written by servers that handed over (non-blocking)."""
    try:
        data = os.read(read_fd, 4096)
    except BlockingIOError:
        return []
    return [int(word) for word in data.split()]


def _subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def main(server: int, read_fd: int) -> None:
    _subreaper()
    os.set_blocking(read_fd, False)
    waited = set(FORWARDED) | {signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    successor: int | None = None
    while True:
        for pid in _announced(read_fd):
            successor = pid
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                sys.exit(1)
            if pid == 0:
                break
            if pid != server:
                continue  # an orphan, or a server that handed over
            for announced in _announced(read_fd):
                successor = announced
            if successor is None or successor == server:
                sys.exit(_exit_status(status))
            server, successor = successor, None
        info = signal.sigtimedwait(waited, 1.0)
        if info is not None and info.si_signo in FORWARDED and info.si_code <= 0:
            try:
                os.kill(server, info.si_signo)
            except ProcessLookupError:
                pass


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
