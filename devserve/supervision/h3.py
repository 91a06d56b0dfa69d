"""HTTP/3 workers: one per UDP socket, on their own slots (dashboard rows after the TCP slots).

- Thread mode: the worker outlives generations. A promotion hands it the new generation's
  ``AppRef`` in one assignment, so new request streams take the new code while QUIC connections
  and running streams stay.
- Process mode: the child holds the old code, so a promotion stops it (GOAWAY, in-flight streams
  finish within the reload grace) and starts a fresh one on the same socket.
Crashes go through the same slot path as TCP workers (:mod:`.slots`), with their own budgets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from devserve.config import Config
from devserve.lifecycle import Event, WorkerReady, WorkerSpawned, WorkerStopped
from devserve.serve.h3 import AppRef
from devserve.supervision.handles import _H3WorkerHandle
from devserve.supervision.launch import Launcher
from devserve.supervision.rollout import Exited, Promoted
from devserve.supervision.slots import SlotGroup

logger = logging.getLogger("devserve.error")

READY_TIMEOUT = 60.0


class H3Workers:
    """The HTTP/3 workers of the Supervisor's UDP sockets."""

    def __init__(self, config: Config, launcher: Launcher, slots: SlotGroup[_H3WorkerHandle],
                 *, emit: Callable[[Event], None], stopping: Callable[[], bool],
                 reload_grace: float) -> None:
        self._config = config
        self._launcher = launcher
        self.slots = slots
        self._emit = emit
        self._stopping = stopping
        self._reload_grace = reload_grace
        self.generation = 0
        self.ref: AppRef | None = None  # thread mode: what new streams are served with

    def _row(self, handle: _H3WorkerHandle) -> int:
        return self._config.workers + handle.worker_id

    def spawn(self, index: int) -> None:
        """Start the worker of UDP socket *index* for the current generation; wait for it."""
        handle = self._launcher.spawn_h3(index, self.generation, self.ref)
        self.slots.place(index, handle)
        row = self._row(handle)
        self._emit(WorkerSpawned(slot=row, generation=handle.generation, ident=handle.ident))
        error = handle.wait_started(time.monotonic() + READY_TIMEOUT, self._stopping)
        if error is None:
            handle.apply(Promoted())
            self._emit(WorkerReady(slot=row, generation=handle.generation, ident=handle.ident))
        else:
            logger.error("HTTP/3 worker %d did not start: %s", index, error.message)

    def promote(self, generation: int, ref: AppRef | None) -> None:
        """New streams go to *generation* from now on (see the module docstring)."""
        self.generation, self.ref = generation, ref
        handles = self.slots.handles()
        if ref is not None:
            for handle in handles.values():
                if handle.worker is not None:
                    handle.worker.app_ref = ref  # one assignment: streams never see a mix
            return
        for index, handle in handles.items():
            handle.stop(self._reload_grace)
            self.finish(handle, self._reload_grace + 1.0)
            self.spawn(index)

    def stop_all(self, grace: float) -> None:
        """GOAWAY everywhere; in-flight streams finish within *grace*."""
        for handle in self.slots.handles().values():
            handle.stop(grace)

    def alive(self) -> bool:
        return any(h.is_alive() for h in self.slots.handles().values())

    def finish(self, handle: _H3WorkerHandle, wait: float) -> None:
        """Give a stopping worker *wait* seconds, then close it by force."""
        handle.target.join(wait)
        if handle.is_alive():
            handle.force_stop(2.0)
        if not handle.is_alive():
            handle.apply(Exited(clean=False))
        self._emit(WorkerStopped(slot=self._row(handle), generation=handle.generation,
                                 forced=handle.is_alive()))

    def finish_all(self) -> None:
        for handle in self.slots.handles().values():
            self.finish(handle, 0.0)
