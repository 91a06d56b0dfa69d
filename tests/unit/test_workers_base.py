"""LoopWorker, the lifecycle every worker shares: the mode ladder, lifespan around serving, the
tick (deadlines and WorkerStats), the bounded drain and the loop teardown — on a real event loop
thread with short real intervals, waiting on readiness signals."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from devserve.asgi.lifespan import LifespanFailed
from devserve.config import Config
from devserve.lifecycle import RecordingCollector, WorkerStats
from devserve.serve.state import WorkerState
from devserve.workers.base import LoopWorker, TCPWorker
from devserve.workers.worker import Worker

TICK = 0.01


def lifespan_app(on_shutdown: Callable[[], Any] | None = None,
                 fail_startup: bool = False) -> Any:
    """An ASGI app speaking only lifespan; *on_shutdown* (a coroutine function) runs first
    on shutdown; startup puts ``{"db": "open"}`` into the lifespan state."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if fail_startup:
                    await send({"type": "lifespan.startup.failed", "message": "no database"})
                    return
                scope["state"]["db"] = "open"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if on_shutdown is not None:
                    await on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


class Probe(LoopWorker):
    """A worker that serves nothing: it records what the lifecycle asks of it."""

    TICK = TICK

    def __init__(self, *, grace: float = 30.0, app: Any = None, run_lifespan: bool = False,
                 collector: RecordingCollector | None = None,
                 drained: Callable[[], bool] = lambda: True) -> None:
        config = Config(loop="asyncio", timeout_graceful_shutdown=grace)
        state = WorkerState(config, app or lifespan_app(), collector=collector)
        super().__init__(config, state, run_lifespan=run_lifespan)
        self.applied: list[tuple[str, int]] = []  # (mode, thread it was applied on)
        self.loop_thread = 0
        self.opened = False
        self.drain_result: bool | None = None
        self.ticks = 0
        self.ticked = threading.Condition()
        self._drained = drained

    async def _open(self) -> None:
        self.loop_thread = threading.get_ident()
        self.opened = True

    def _on_mode(self, mode: str) -> None:
        self.applied.append((mode, threading.get_ident()))

    async def _close(self) -> None:
        self.drain_result = await self._drain(self._drained)

    def _on_tick(self, now: float) -> None:
        with self.ticked:
            self.ticks += 1
            self.ticked.notify_all()

    def wait_ticks(self, count: int, timeout: float = 5.0) -> None:
        with self.ticked:
            assert self.ticked.wait_for(lambda: self.ticks >= count, timeout), (
                f"only {self.ticks} ticks")


def start(worker: LoopWorker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert worker.ready.wait(5), "the worker never became ready"
    return thread


def stop_wait(worker: LoopWorker, thread: threading.Thread, timeout: float = 5.0) -> None:
    thread.join(timeout)
    assert not thread.is_alive(), "the worker did not stop"


def test_the_async_worker_meets_the_supervisor_protocol() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        assert isinstance(Worker(Config(), lifespan_app(), sock), TCPWorker)


def test_modes_only_escalate_and_are_applied_on_the_loop() -> None:
    worker = Probe()
    thread = start(worker)
    worker.shutdown()
    worker.start_draining()  # lower than shutdown: ignored
    stop_wait(worker, thread)
    assert worker.mode == "shutdown"
    assert worker.applied == [("shutdown", worker.loop_thread)]
    assert worker.loop_thread != threading.get_ident()
    assert not worker.retired and worker.startup_error is None


def test_a_mode_requested_before_run_is_applied_once_ready() -> None:
    worker = Probe()
    worker.start_draining()
    thread = start(worker)
    stop_wait(worker, thread)
    assert worker.opened
    assert [mode for mode, _ in worker.applied] == ["draining"]


def test_force_cuts_a_drain_short() -> None:
    worker = Probe(grace=30.0, drained=lambda: False)
    thread = start(worker)
    began = time.monotonic()
    worker.shutdown()
    worker.force_stop()
    stop_wait(worker, thread)
    assert time.monotonic() - began < 5
    assert worker.drain_result is False
    assert worker.mode == "force"


def test_grace_bounds_the_drain() -> None:
    worker = Probe(grace=0.05, drained=lambda: False)
    thread = start(worker)
    worker.start_draining()
    stop_wait(worker, thread)
    assert worker.drain_result is False


def test_retire_drains_like_a_reload_and_says_so() -> None:
    worker = Probe()
    thread = start(worker)
    worker.retire()
    stop_wait(worker, thread)
    assert worker.retired
    assert [mode for mode, _ in worker.applied] == ["draining"]


def test_tick_is_rescheduled_and_gauges_are_sent_only_when_they_change() -> None:
    collector = RecordingCollector()
    worker = Probe(collector=collector)
    thread = start(worker)
    worker.wait_ticks(3)
    first = collector.of_type(WorkerStats)
    assert len(first) == 1  # three ticks, one unchanged reading
    worker.state.total_requests = 1
    second = collector.wait_for(WorkerStats, 2)[-1]
    assert isinstance(second, WorkerStats)
    assert (second.connections, second.in_flight, second.requests) == (0, 0, 1)
    worker.wait_ticks(worker.ticks + 3)
    assert len(collector.of_type(WorkerStats)) == 2
    worker.shutdown()
    stop_wait(worker, thread)


def test_lifespan_wraps_serving_and_the_tick_stops_before_shutdown() -> None:
    seen: dict[str, Any] = {}
    worker: Probe

    async def slow_shutdown() -> None:
        seen["ticks at shutdown"] = worker.ticks
        seen["loop"] = asyncio.get_running_loop()
        await asyncio.sleep(10 * TICK)  # a slow app shutdown: ten ticks' worth
        seen["ticks after"] = worker.ticks

    worker = Probe(app=lifespan_app(slow_shutdown), run_lifespan=True)
    thread = start(worker)
    assert worker.state.lifespan_state == {"db": "open"}
    worker.wait_ticks(2)
    worker.shutdown()
    stop_wait(worker, thread)
    assert seen["ticks after"] == seen["ticks at shutdown"] >= 2
    assert seen["loop"].is_closed()


def test_a_failed_lifespan_startup_is_reported_and_nothing_opens() -> None:
    worker = Probe(app=lifespan_app(fail_startup=True), run_lifespan=True)
    thread = start(worker)
    stop_wait(worker, thread)
    assert isinstance(worker.startup_error, LifespanFailed)
    assert not worker.opened


class Broken(Probe):
    async def _open(self) -> None:
        raise RuntimeError("cannot listen")


def test_a_crash_while_opening_is_raised_and_recorded() -> None:
    worker = Broken()
    with pytest.raises(RuntimeError, match="cannot listen"):
        worker.run()
    assert isinstance(worker.startup_error, RuntimeError)
    assert worker.ready.is_set()
