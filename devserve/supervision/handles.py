"""Worker handles: one running worker (thread or process) and the small helpers around it.

A handle knows its target (``threading.Thread`` or a spawned process), the worker object
(thread mode) or the pipe to the child (process mode), how its start-up ended, and its named
:class:`~.rollout.WorkerState`, advanced only through :meth:`_Handle.apply`. The product spec
places ``_WorkerHandle``, ``_H3WorkerHandle``, ``_parallel_join_targets`` and ``_target_id`` in
``devserve.supervisor``, which re-exports them.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from devserve.supervision.ipc import (
    AcceptStopped,
    Channel,
    ChildMessage,
    Command,
    Drain,
    Failed,
    Force,
    HandOff,
    ListModules,
    MarkUnhealthy,
    Modules,
    Ready,
    Shutdown,
    StopAccepting,
)
from devserve.supervision.rollout import (
    BecameReady,
    Status,
    StopAsked,
    WorkerEvent,
    WorkerState,
    step,
)
from devserve.supervision.rollout import Command as RolloutCommand
from devserve.workers.base import TCPWorker
from devserve.workers.h3_worker import H3Worker

Target = threading.Thread | BaseProcess


def _target_id(target: Target) -> str:
    """pid for a process, name for a thread."""
    if isinstance(target, threading.Thread):
        return target.name
    return f"pid {target.pid}"


def _parallel_join_targets(targets: list[Target], timeout_per: float) -> None:
    """Join every target with its own *timeout_per* budget, all at once (not one shared
    deadline that starves the last ones in the list)."""
    joiners = [
        threading.Thread(target=t.join, args=(timeout_per,), daemon=True) for t in targets
    ]
    for j in joiners:
        j.start()
    for j in joiners:
        j.join(timeout_per + 1.0)


@dataclass(frozen=True)
class StartError:
    """Why a generation (or one worker of it) did not become ready."""

    message: str
    traceback: str | None = None
    location: str | None = None


class _Handle:
    """What TCP and HTTP/3 handles share: target, start-up outcome, named state."""

    def __init__(self, worker_id: int, target: Target, *, generation: int = 0,
                 channel: Channel | None = None) -> None:
        self.worker_id = worker_id
        self.target = target
        self.generation = generation
        self.channel = channel  # process mode: the pipe to the child
        self.ready = threading.Event()  # the start-up outcome is known (ready or failed)
        self.error: str | None = None
        self.error_traceback: str | None = None
        self.error_location: str | None = None
        self.started_at = time.monotonic()
        self.reader_done = threading.Event()  # process mode: the pipe reader saw EOF
        self.accept_stopped = threading.Event()  # process mode: the child closed its listener
        self.modules: tuple[str, ...] = ()  # process mode: its loaded project modules
        self.modules_known = threading.Event()
        # process mode, while it drains for a reload: where its idle connections go
        self.handoff: Callable[[socket.socket], None] | None = None
        self._status = Status()
        self._lock = threading.Lock()

    # -- state -----------------------------------------------------------------------------
    @property
    def status(self) -> Status:
        return self._status

    @property
    def state(self) -> WorkerState:
        return self._status.state

    @property
    def expected_exit(self) -> bool:
        """Asked to stop: its exit is not a crash."""
        return self._status.state in (WorkerState.DRAINING, WorkerState.STOPPED)

    def apply(self, event: WorkerEvent) -> tuple[RolloutCommand, ...]:
        """Advance the named state (see :mod:`.rollout`); returns what must be done."""
        with self._lock:
            self._status, commands = step(self._status, event)
        return commands

    # -- start-up --------------------------------------------------------------------------
    def mark_ready(self) -> None:
        self.apply(BecameReady())
        self.ready.set()

    def mark_failed(self, message: str, traceback: str | None = None,
                    location: str | None = None) -> None:
        self.error, self.error_traceback, self.error_location = message, traceback, location
        self.ready.set()

    def wait_started(self, deadline: float, stopping: Callable[[], bool]) -> StartError | None:
        """Block until the start-up outcome is known: None when ready, else why not (it
        failed, exited, missed *deadline*, or a stop was requested meanwhile)."""
        while not self.ready.wait(0.05):
            if not self.is_alive() and not self.ready.is_set():
                self.reader_done.wait(1.0)  # its last words may still be in the pipe
                if self.error is None:
                    code = getattr(self.target, "exitcode", None)
                    self.mark_failed(f"worker exited during startup ({self.ident}" + (
                        f", exit code {code})" if code is not None else ")"))
                break
            if time.monotonic() > deadline:
                self.mark_failed("worker did not become ready in time")
                break
            if stopping():
                return StartError("shutdown requested during startup")
        if self.error is not None:
            return StartError(self.error, self.error_traceback, self.error_location)
        return None

    def on_child_message(self, message: ChildMessage) -> None:
        """Process mode: the child's start-up report (events are the launcher's business)."""
        if isinstance(message, Ready):
            self.mark_ready()
        elif isinstance(message, Failed):
            self.mark_failed(message.message, message.traceback, message.location)
        elif isinstance(message, AcceptStopped):
            self.accept_stopped.set()
        elif isinstance(message, Modules):
            self.modules = message.names
            self.modules_known.set()
        elif isinstance(message, HandOff) and message.sock is not None:
            handoff = self.handoff
            if handoff is not None:
                handoff(message.sock)
            message.sock.close()  # this process's copy; the client's connection lives on

    def adopt(self, sock: socket.socket) -> None:
        """Process mode: pass a connection a draining child handed over to this child."""
        if self.channel is not None:
            self.channel.send_socket(sock)

    def loaded_modules(self, timeout: float) -> tuple[str, ...]:
        """Process mode: the project modules this child has loaded (empty when it does not
        answer within *timeout*: the next generation then imports what the app imports)."""
        self.modules_known.clear()
        if self.channel is None or not self.channel.send(ListModules()):
            return ()
        return self.modules if self.modules_known.wait(timeout) else ()

    # -- the target ------------------------------------------------------------------------
    @property
    def ident(self) -> str:
        return _target_id(self.target)

    def is_alive(self) -> bool:
        return self.target.is_alive()

    def exit_reason(self) -> str:
        code = getattr(self.target, "exitcode", None)
        return self.error or (f"exit code {code}" if code is not None else "thread died")

    def exited_cleanly(self) -> bool:
        """Exited by itself without error (``--limit-max-requests``): replaced, not a crash."""
        return False

    def send(self, command: Command) -> None:
        if self.channel is not None:
            self.channel.send(command)

    def force(self) -> None:
        raise NotImplementedError

    def force_stop(self, join_timeout: float) -> None:
        """Close everything now; a process that still lingers gets SIGTERM, then SIGKILL.
        (A thread cannot be killed: it is a daemon and dies with the process.)"""
        self.force()
        target = self.target
        if isinstance(target, threading.Thread):
            target.join(join_timeout)
            return
        target.join(min(join_timeout, 0.5))
        if target.is_alive():
            target.terminate()
            target.join(join_timeout)
        if target.is_alive():
            target.kill()
            target.join(join_timeout)


class _WorkerHandle(_Handle):
    """A running TCP worker (thread or process) of one slot in one generation."""

    def __init__(self, worker_id: int, target: Target, worker: TCPWorker | None,
                 generation: int = 0, *, channel: Channel | None = None) -> None:
        super().__init__(worker_id, target, generation=generation, channel=channel)
        self.worker = worker

    def exited_cleanly(self) -> bool:
        if self.worker is not None:
            return self.worker.retired and self.worker.startup_error is None
        return getattr(self.target, "exitcode", None) == 0

    def start_draining(self, grace: float) -> None:
        """Reload: finish in-flight requests within *grace*, accept nothing new, exit."""
        self.apply(StopAsked())
        if self.worker is not None:
            self.worker.grace = grace
            self.worker.start_draining()
        else:
            self.send(Drain(grace))

    def mark_unhealthy(self) -> None:
        """``--shutdown-delay``: its health endpoint answers 503; everything else is served."""
        if self.worker is not None:
            self.worker.mark_unhealthy()
        else:
            self.send(MarkUnhealthy())

    def stop_accepting(self, backlog: bool) -> threading.Event:
        """Close its listener fd (first accepting the *backlog*, when it holds the last one);
        the event is set once closed. A child that is gone holds nothing: set at once."""
        if self.worker is not None:
            return self.worker.stop_accepting(backlog)
        if self.channel is None or not self.channel.send(StopAccepting(backlog)):
            self.accept_stopped.set()
        return self.accept_stopped

    def shutdown(self, grace: float) -> None:
        """Stop: in-flight requests finish within *grace*, what still arrives on open
        connections is answered with ``Connection: close``, exit."""
        self.apply(StopAsked())
        if self.worker is not None:
            self.worker.grace = grace
            self.worker.shutdown()
        else:
            self.send(Shutdown(grace))

    def force(self) -> None:
        self.apply(StopAsked())
        if self.worker is not None:
            self.worker.force_stop()
        else:
            self.send(Force())


class _H3WorkerHandle(_Handle):
    """A running HTTP/3 (UDP/QUIC) worker: a thread that outlives generations (thread mode;
    ``worker`` set) or a spawned process replaced on each promotion (process mode)."""

    def __init__(self, worker_id: int, target: Target, *, worker: H3Worker | None = None,
                 generation: int = 0, channel: Channel | None = None) -> None:
        super().__init__(worker_id, target, generation=generation, channel=channel)
        self.worker = worker

    @property
    def ident(self) -> str:
        return f"h3-{self.worker_id} ({_target_id(self.target)})"

    def mark_unhealthy(self) -> None:
        """``--shutdown-delay``: its health endpoint answers 503; streams are served."""
        if self.worker is not None:
            self.worker.mark_unhealthy()
        else:
            self.send(MarkUnhealthy())

    def stop(self, grace: float, *, force: bool = False) -> None:
        """GOAWAY, let in-flight streams finish within *grace*, close (now if *force*)."""
        self.apply(StopAsked())
        if self.worker is not None:
            self.worker.grace = grace
            self.worker.force_stop() if force else self.worker.shutdown()
        else:
            self.send(Force() if force else Shutdown(grace))

    def force(self) -> None:
        self.stop(0.0, force=True)
