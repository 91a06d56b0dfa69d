"""What the Supervisor may rely on in a worker (:class:`TCPWorker`), and the one lifecycle every
worker shares (:class:`LoopWorker`).

A worker's life: make an event loop, run the app's lifespan startup, open (start serving),
announce ``ready``, serve until a mode change stops it, drain within ``grace``, close what remains,
run lifespan shutdown, tear the loop down. Modes only escalate — ``running`` < ``draining``
(reload: finish in-flight, accept nothing new; thread mode hands idle connections over) <
``shutdown`` (stop: finish in-flight, answer what still arrives on open connections with
``Connection: close``, accept nothing new) < ``force`` (close now) — and are requested from any
thread; the loop applies them. Before a stop the Supervisor may mark a worker unhealthy
(``--shutdown-delay``: only the health endpoint changes) and close its listener
(:meth:`TCPWorker.stop_accepting`). One timer per worker ticks: connection deadlines (subclass
hook) and the dashboard's gauges (WorkerStats, sent only when they change).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from devserve.asgi.lifespan import Lifespan, LifespanFailed
from devserve.config import Config
from devserve.lifecycle import WorkerStats
from devserve.serve.state import WorkerState
from devserve.workers.loop import close_loop, new_event_loop

logger = logging.getLogger("devserve.error")

T = TypeVar("T")

RUNNING, DRAINING, SHUTDOWN, FORCE = "running", "draining", "shutdown", "force"
_RANK = {RUNNING: 0, DRAINING: 1, SHUTDOWN: 2, FORCE: 3}
POLL = 0.05  # longest wait between two looks at a draining worker's state


@runtime_checkable
class TCPWorker(Protocol):
    """What the Supervisor needs to spawn, drain, hand over to and retire a TCP worker
    (``Worker`` and ``SyncWorker``)."""

    slot: int
    grace: float  # seconds the next drain or shutdown may take; the Supervisor sets it
    ready: threading.Event  # set once lifespan startup succeeded and it serves (or failed)
    startup_error: BaseException | None
    retired: bool  # exited by itself after --limit-max-requests: not a crash
    forced_connections: int  # connections still open when the grace ran out
    # Thread-mode reload: where idle keep-alive connections go instead of being closed.
    handoff: Callable[[socket.socket], None] | None

    @property
    def state(self) -> WorkerState:
        """Shared per-worker state (``lifespan_state``, ``draining``, ``shutting_down``)."""

    @property
    def in_flight(self) -> int:
        """Requests being served right now."""

    def run(self) -> None:
        """Serve until stopped; blocks the calling thread or process."""

    def set_lifespan_state(self, state: dict[str, Any]) -> None:
        """Use *state* (from a lifespan run elsewhere) as the base of each request scope."""

    def start_draining(self) -> None:
        """Reload: stop accepting, finish in-flight requests, close idle connections, exit."""

    def shutdown(self) -> None:
        """Stop: in-flight requests finish within ``grace``; requests still arriving on open
        connections are answered with ``Connection: close``; idle connections close."""

    def force_stop(self) -> None:
        """Close every connection now and exit (after a grace ran out)."""

    def is_idle(self) -> bool:
        """True when no request is in flight."""

    def adopt(self, sock: socket.socket) -> None:
        """Serve an idle connection handed over by a draining generation."""

    def mark_unhealthy(self) -> None:
        """``--shutdown-delay`` began: the health endpoint answers 503, all else is served."""

    def stop_accepting(self, backlog: bool = False) -> threading.Event:
        """Close the listener fd this worker holds; the event is set once it is closed.
        *backlog*: the caller closed every other fd of the listener, so this is the last one —
        first accept and serve what the kernel still queues (closing the last fd would reset
        those connections; from then on new ones are refused)."""


class LoopWorker:
    """The shared lifecycle; subclasses say how to open, drain and close (see the hooks)."""

    TICK: ClassVar[float] = 0.5  # seconds between ticks (deadlines, gauges)

    def __init__(self, config: Config, state: WorkerState, *, run_lifespan: bool) -> None:
        self.config = config
        self.state = state
        self.slot = state.slot
        self.generation = state.generation
        self.run_lifespan = run_lifespan
        self.grace = config.timeout_graceful_shutdown
        self.ready = threading.Event()
        self.startup_error: BaseException | None = None
        self.forced_connections = 0
        self.retired = False
        self.handoff: Callable[[socket.socket], None] | None = None
        self._mode = RUNNING
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._last_gauges: tuple[int, int, int] | None = None

    # -- control (any thread) --------------------------------------------------------------
    def run(self) -> None:
        """Serve until stopped on a fresh loop, then close the loop (even after a crash)."""
        loop = new_event_loop(self.config.loop)
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # a bug here must surface as a crash, not a hang
            if self.startup_error is None:
                self.startup_error = exc
            raise
        finally:
            self.ready.set()
            try:
                self._teardown()
            finally:
                close_loop(loop)

    def set_lifespan_state(self, state: dict[str, Any]) -> None:
        self.state.lifespan_state = state

    def start_draining(self) -> None:
        self._request(DRAINING)

    def shutdown(self) -> None:
        self._request(SHUTDOWN)

    def force_stop(self) -> None:
        self._request(FORCE)

    def mark_unhealthy(self) -> None:
        self.state.unhealthy = True  # read by admission on the loop; one plain store

    def stop_accepting(self, backlog: bool = False) -> threading.Event:
        """No listener here (subclasses that hold one override this)."""
        done = threading.Event()
        done.set()
        return done

    def retire(self) -> None:
        """``--limit-max-requests`` reached: drain like a reload; the Supervisor replaces it."""
        self.retired = True
        self._request(DRAINING)

    def is_idle(self) -> bool:
        return self.in_flight == 0

    @property
    def in_flight(self) -> int:
        return len(self.state.tasks)

    @property
    def mode(self) -> str:
        return self._mode

    def _request(self, mode: str) -> None:
        if _RANK[mode] <= _RANK[self._mode]:
            return  # modes only escalate
        self._mode = mode
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not started yet: applied once it is ready
        try:
            loop.call_soon_threadsafe(self._apply_mode)
        except RuntimeError:
            pass  # loop closed between the check and the call

    # -- hooks -----------------------------------------------------------------------------
    async def _open(self) -> None:
        """Start serving (after lifespan startup, before ``ready``)."""
        raise NotImplementedError

    def _on_mode(self, mode: str) -> None:
        """React to a new mode, on the loop (e.g. tell connections to drain)."""

    async def _close(self) -> None:
        """After the stop: drain within ``grace``, close what remains, set
        ``forced_connections``."""
        raise NotImplementedError

    def _on_tick(self, now: float) -> None:
        """Every ``TICK`` seconds on the loop; *now* is the loop's clock."""

    def _gauges(self) -> tuple[int, int, int]:
        """(connections, in flight, requests served) for the dashboard."""
        state = self.state
        return len(state.connections), len(state.tasks), state.total_requests

    def _teardown(self) -> None:
        """After the loop stopped, before it closes (always runs, even after a crash)."""

    async def _on_app_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run *coro* where the app's async code lives (this loop unless overridden)."""
        return await coro

    # -- the loop side ---------------------------------------------------------------------
    def _apply_mode(self) -> None:
        self._on_mode(self._mode)
        if self._stop is not None:
            self._stop.set()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        lifespan: Lifespan | None = None
        if self.run_lifespan and self.config.lifespan != "off":
            lifespan = Lifespan(self.state.app, self.config.lifespan)
            try:
                await self._on_app_loop(lifespan.startup())
            except LifespanFailed as exc:
                self.startup_error = exc
                return
            if lifespan.supported:
                self.set_lifespan_state(lifespan.state)
        try:
            await self._open()
            self._tick_handle = loop.call_later(self.TICK, self._tick)
            self.ready.set()
            if self._mode != RUNNING:
                self._apply_mode()  # requested before the loop could take it
            await self._stop.wait()
            if self._mode == RUNNING:  # stopped by itself (--limit-max-requests)
                self.retired = True
                self._mode = DRAINING
                self._apply_mode()
            await self._close()
        finally:
            self._cancel_tick()
        if lifespan is not None:
            await self._stop_lifespan(lifespan)

    async def _stop_lifespan(self, lifespan: Lifespan) -> None:
        try:
            await asyncio.wait_for(self._on_app_loop(lifespan.shutdown(timeout=self.grace)),
                                   self.grace + 1.0)
        except Exception:
            logger.exception("lifespan shutdown failed")

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        self._tick_handle = loop.call_later(self.TICK, self._tick)  # the one live handle
        self._on_tick(loop.time())
        collector = self.state.collector
        if collector is None:
            return
        gauges = self._gauges()
        if gauges != self._last_gauges:
            self._last_gauges = gauges
            collector.emit(WorkerStats(slot=self.slot, generation=self.generation,
                                       connections=gauges[0], in_flight=gauges[1],
                                       requests=gauges[2]))

    def _cancel_tick(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None

    async def _wait_until(self, done: Callable[[], bool], timeout: float, *,
                          until_force: bool = True) -> bool:
        """Wait (at most *timeout*, and only until ``force`` when *until_force*) for *done*;
        wakes when an in-flight task ends, else every ``POLL`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            left = deadline - loop.time()
            if left <= 0 or (until_force and self._mode == FORCE):
                return False
            busy = [t for t in self.state.tasks if not t.done()]
            if busy:
                await asyncio.wait(busy, timeout=min(POLL, left))
            else:
                await asyncio.sleep(min(POLL / 5, left))
        return True

    async def _drain(self, done: Callable[[], bool]) -> bool:
        """Wait within ``grace`` (cut short by ``force``) until *done*."""
        return await self._wait_until(done, self.grace)

    async def _settle_tasks(self) -> None:
        """Give cancelled or aborted request tasks a moment to see the disconnect and end."""
        if self.state.tasks:
            await asyncio.wait(list(self.state.tasks), timeout=1.0)
