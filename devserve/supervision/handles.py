"""Worker handles and the small pure helpers the Supervisor builds on.

Split from ``supervisor.py`` so that module keeps to generations and policy; the Supervisor
re-exports these names (the product spec places ``_WorkerHandle``, ``_H3WorkerHandle``,
``_parallel_join_targets`` and ``_target_id`` in ``devserve.supervisor``).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal

from devserve.config import Config
from devserve.errors import DevserveError
from devserve.workers.sync_worker import SyncWorker
from devserve.workers.worker import Worker

WorkerMode = Literal["thread", "process"]
Target = threading.Thread | BaseProcess


def gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def choose_mode(config: Config, *, app_is_object: bool, reload: bool = False
                ) -> tuple[WorkerMode, str]:
    """Pick thread or process workers and say why (shown in the banner)."""
    if config.worker_mode != "auto":
        if config.worker_mode == "process" and app_is_object:
            raise DevserveError(
                "--worker-mode process needs the app as an import string",
                hint="pass 'module:attr' instead of an app object",
            )
        return config.worker_mode, "chosen with --worker-mode"
    if app_is_object:
        return "thread", "the app was passed as an object (processes need an import string)"
    if not gil_enabled():
        return "thread", "the interpreter runs without the GIL"
    if reload and config.workers == 1:
        return "thread", "--reload with one worker re-imports in-process"
    return "process", "the GIL is enabled, so processes give parallelism"


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


class _WorkerHandle:
    """A running worker (thread or process) of one slot in one generation."""

    def __init__(self, worker_id: int, target: Target, worker: Worker | SyncWorker | None,
                 generation: int = 0) -> None:
        self.worker_id = worker_id
        self.target = target
        self.worker = worker
        self.generation = generation
        self.conn: Connection | None = None
        self.ready = threading.Event()
        self.error: str | None = None
        self.error_traceback: str | None = None
        self.error_location: str | None = None
        self.expected_exit = False
        self.started_at = time.monotonic()
        self.reader_done = threading.Event()  # process mode: the pipe reader saw EOF

    @property
    def ident(self) -> str:
        return _target_id(self.target)

    def is_alive(self) -> bool:
        return self.target.is_alive()

    def _command(self, command: Any) -> None:
        if self.conn is not None:
            try:
                self.conn.send(command)
            except (OSError, ValueError):
                pass

    def start_draining(self, grace: float) -> None:
        self.expected_exit = True
        if self.worker is not None:
            self.worker.grace = grace
            self.worker.start_draining()
        else:
            self._command(("grace", grace))
            self._command("drain")

    def shutdown(self, grace: float) -> None:
        self.expected_exit = True
        if self.worker is not None:
            self.worker.grace = grace
            self.worker.shutdown()
        else:
            self._command(("grace", grace))
            self._command("shutdown")

    def force(self) -> None:
        self.expected_exit = True
        if self.worker is not None:
            self.worker.force_stop()
        else:
            self._command("force")


class _H3WorkerHandle:
    """A running HTTP/3 (UDP/QUIC) worker: a thread that outlives generations (thread mode;
    ``worker`` set) or a spawned process replaced on each promotion (process mode; ``conn``)."""

    def __init__(self, worker_id: int, target: Target) -> None:
        self.worker_id = worker_id
        self.target = target
        self.worker: Any = None  # H3Worker in thread mode
        self.conn: Connection | None = None
        self.ready = threading.Event()
        self.error: str | None = None
        self.expected_exit = False
        self.generation = 0  # the generation it was started in (its dashboard row)

    @property
    def ident(self) -> str:
        return f"h3-{self.worker_id} ({_target_id(self.target)})"

    def is_alive(self) -> bool:
        return self.target.is_alive()

    def stop(self, grace: float, *, force: bool = False) -> None:
        """GOAWAY, let in-flight streams finish within *grace*, close (now if *force*)."""
        self.expected_exit = True
        if self.worker is not None:
            self.worker.grace = grace
            self.worker.force_stop() if force else self.worker.shutdown()
        elif self.conn is not None:
            try:
                self.conn.send(("grace", grace))
                self.conn.send("force" if force else "shutdown")
            except (OSError, ValueError):
                pass
