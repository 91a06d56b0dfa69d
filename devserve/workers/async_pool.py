"""A small pool of event-loop threads for the async parts of sync serving.

SyncWorkers run blocking code, but an ASGI app served with ``--execution sync`` still has an
async lifespan whose tasks must outlive any single request: it runs here, on a loop that stays
alive for the whole worker. Loops start lazily (a WSGI app never pays for a thread). Shutdown
order: the pool is closed *after* the workers that use it have stopped, so a lifespan shutdown
still finds its loop running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from devserve.workers.loop import close_loop, new_event_loop

T = TypeVar("T")


class AsyncPool:
    """``size`` event loops on daemon threads; coroutines are handed out round-robin."""

    def __init__(self, size: int = 1, *, loop_setting: str = "asyncio",
                 name: str = "devserve-async") -> None:
        self._size = max(1, size)
        self._loop_setting = loop_setting
        self._name = name
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._next = itertools.count()
        self._closed = False

    def _start(self) -> None:
        for i in range(self._size):
            loop = new_event_loop(self._loop_setting)
            started = threading.Event()
            thread = threading.Thread(target=self._run_loop, args=(loop, started),
                                      name=f"{self._name}-{i}", daemon=True)
            thread.start()
            started.wait()
            self._loops.append(loop)
            self._threads.append(thread)

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        try:
            loop.run_forever()
        finally:
            close_loop(loop)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule *coro* on one of the loops (starting them on first use)."""
        with self._lock:
            if self._closed:
                coro.close()
                raise RuntimeError("the AsyncPool is closed")
            if not self._loops:
                self._start()
            loop = self._loops[next(self._next) % len(self._loops)]
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def close(self, timeout: float = 5.0) -> None:
        """Stop every loop (cancelling what still runs) and join their threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loops, threads = list(self._loops), list(self._threads)
        for loop in loops:
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass  # already closed
        for thread in threads:
            thread.join(timeout)
