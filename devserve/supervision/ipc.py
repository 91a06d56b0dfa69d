"""Supervisor <-> child-process messages: frozen dataclasses over a ``multiprocessing`` pipe.

Child → Supervisor: :class:`Ready`, :class:`Failed` (message, traceback, ``file:line``),
:class:`Forward` (a lifecycle event for the displays), :class:`AcceptStopped`,
:class:`LibraryModules` (what a process template should import), :class:`HandOff` (an idle
keep-alive connection of a draining child, for the new generation).
Supervisor → child: :class:`Drain` (reload), the stop in its steps (:class:`MarkUnhealthy`,
:class:`StopAccepting`, :class:`Shutdown`), :class:`Force`,
:class:`LivereloadError` (show a failed reload in the browser), :class:`Refresh` (templates
or browser assets changed: forget compiled templates, tell open pages), :class:`HandOff` (serve
this connection).

A message is matched on its type, never on its shape. Either side may vanish at any moment, so
:meth:`Channel.send` never raises; a child treats the pipe's end as "the Supervisor is gone" and
shuts down. The child runs one :func:`dispatch_commands` loop; the Supervisor one
:func:`read_messages` loop per child.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Protocol

from devserve.lifecycle import Event

logger = logging.getLogger("devserve.error")


# -- child → Supervisor --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Ready:
    """The worker imported the app, ran lifespan startup and accepts connections."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The worker could not start (import or lifespan); it exits right after sending this."""

    message: str
    traceback: str | None = None
    location: str | None = None  # "file:line" of the user's error, when known


@dataclass(frozen=True, slots=True)
class Forward:
    """A lifecycle event the child produced (requests, gauges) for the Supervisor's displays."""

    event: Event


@dataclass(frozen=True, slots=True)
class AcceptStopped:
    """The answer to :class:`StopAccepting`: this child's listener fd is closed."""


@dataclass(frozen=True, slots=True)
class Modules:
    """The answer to :class:`ListModules`: the project modules this child has loaded (lazily
    imported ones included), in the order they were first imported."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LibraryModules:
    """The library modules (stdlib, site-packages) this child has loaded: sent once it is ready
    and before each :class:`Modules`; the next process template imports them."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HandOff:
    """An idle keep-alive connection this draining child hands to the next generation; its fd
    follows (``SCM_RIGHTS``, see :meth:`Channel.send_socket`), and :func:`read_messages` fills
    in *sock*. Also the command passing it on to a child of the new generation."""

    sock: socket.socket | None = None


ChildMessage = Ready | Failed | Forward | AcceptStopped | Modules | LibraryModules | HandOff


# -- Supervisor → child --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Drain:
    """Reload: stop accepting, finish in-flight requests within *grace* seconds, exit."""

    grace: float


@dataclass(frozen=True, slots=True)
class MarkUnhealthy:
    """``--shutdown-delay`` began: the health endpoint answers 503, everything else is served."""


@dataclass(frozen=True, slots=True)
class StopAccepting:
    """Close the inherited listener fd, then answer :class:`AcceptStopped`. *backlog*: it is
    the last open fd, so first accept (and serve) what the kernel still queues."""

    backlog: bool


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Stop: in-flight requests finish within *grace* seconds (what still arrives on open
    connections is answered with ``Connection: close``), exit."""

    grace: float


@dataclass(frozen=True, slots=True)
class Force:
    """Close every connection now and exit."""


@dataclass(frozen=True, slots=True)
class LivereloadError:
    """A reload failed: browsers of the still-serving generation show this overlay."""

    error: str
    location: str | None = None
    traceback: str | None = None


@dataclass(frozen=True, slots=True)
class Refresh:
    """Templates or browser assets changed: no new generation. The child forgets compiled
    templates (when *templates*) and its browsers swap stylesheets or reload (*kind*)."""

    kind: str  # "css" | "page"
    paths: tuple[str, ...]
    templates: bool


@dataclass(frozen=True, slots=True)
class ListModules:
    """Which project modules are loaded? The next generation imports them all before it is
    promoted, so an error in a lazily imported one keeps this generation serving."""


Command = (Drain | MarkUnhealthy | StopAccepting | Shutdown | Force | LivereloadError | Refresh
           | ListModules | HandOff)


class Channel:
    """One end of the pipe; ``send`` may be called from several threads and never raises."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: ChildMessage | Command) -> bool:
        """Send *message*; False when the other side is gone (its pipe end closed)."""
        with self._lock:
            try:
                self.conn.send(message)
            except (OSError, ValueError):
                return False
        return True

    def send_socket(self, sock: socket.socket) -> bool:
        """Send *sock* as a :class:`HandOff` (the message, then its fd); False when the other
        side is gone. The caller still owns (and closes) its copy."""
        with self._lock:
            try:
                self.conn.send(HandOff())
                with socket.socket(fileno=os.dup(self.conn.fileno())) as pipe:
                    socket.send_fds(pipe, [b"F"], [sock.fileno()])
            except (OSError, ValueError):
                return False
        return True

    def close(self) -> None:
        self.conn.close()


def _received(conn: Connection) -> Iterator[object]:
    """Every object arriving on *conn* until the other side closes it (a :class:`HandOff`
    with the socket that followed it)."""
    while True:
        try:
            message = conn.recv()
            if isinstance(message, HandOff):
                with socket.socket(fileno=os.dup(conn.fileno())) as pipe:
                    _, fds, _, _ = socket.recv_fds(pipe, 1, 1)
                if not fds:
                    continue
                message = HandOff(socket.socket(fileno=fds[0]))
            yield message
        except (EOFError, OSError):
            return


def read_messages(conn: Connection, on_message: Callable[[ChildMessage], None]) -> None:
    """Supervisor side: hand each child message to *on_message* until the child's end closes."""
    for message in _received(conn):
        if isinstance(message, Ready | Failed | Forward | AcceptStopped | Modules | LibraryModules
                      | HandOff):
            on_message(message)
        else:
            logger.warning("ignored an unknown message from a worker process: %r", message)


class ChildControl(Protocol):
    """What a child does with the Supervisor's commands (see :func:`dispatch_commands`)."""

    def drain(self, grace: float) -> None: ...

    def mark_unhealthy(self) -> None: ...

    def stop_accepting(self, backlog: bool) -> None: ...

    def shutdown(self, grace: float) -> None: ...

    def force(self) -> None: ...

    def livereload_error(self, error: LivereloadError) -> None: ...

    def refresh(self, refresh: Refresh) -> None: ...

    def list_modules(self) -> None: ...

    def adopt(self, sock: socket.socket) -> None: ...

    def parent_gone(self) -> None: ...


def dispatch_commands(conn: Connection, control: ChildControl) -> None:
    """Child side: the one command loop. Returns after ``parent_gone()`` when the pipe ends."""
    for command in _received(conn):
        if isinstance(command, Drain):
            control.drain(command.grace)
        elif isinstance(command, MarkUnhealthy):
            control.mark_unhealthy()
        elif isinstance(command, StopAccepting):
            control.stop_accepting(command.backlog)
        elif isinstance(command, MarkUnhealthy):
            control.mark_unhealthy()
        elif isinstance(command, StopAccepting):
            control.stop_accepting(command.backlog)
        elif isinstance(command, Shutdown):
            control.shutdown(command.grace)
        elif isinstance(command, Force):
            control.force()
        elif isinstance(command, LivereloadError):
            control.livereload_error(command)
        elif isinstance(command, Refresh):
            control.refresh(command)
        elif isinstance(command, ListModules):
            control.list_modules()
        elif isinstance(command, HandOff) and command.sock is not None:
            control.adopt(command.sock)
        else:
            logger.warning("ignored an unknown command from the Supervisor: %r", command)
    control.parent_gone()
