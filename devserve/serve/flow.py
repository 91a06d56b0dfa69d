"""Where an app's ``send()`` waits until its connection can take more output, in one place.

asyncio tells a protocol to stop writing (``pause_writing``) once its transport buffers past the
high-water mark and ``resume_writing`` once it drained; an HTTP/2 or HTTP/3 stream waits for
flow-control credit or acknowledgements instead. Either way a coroutine parks on
:class:`Waiters` until whoever changed the condition wakes it, then checks its condition again.
"""

from __future__ import annotations

import asyncio


class Waiters:
    """Coroutines parked until the next :meth:`wake` (which wakes them all)."""

    __slots__ = ("_futures",)

    def __init__(self) -> None:
        self._futures: list[asyncio.Future[None]] = []

    async def wait(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self._futures.append(future)
        await future

    def wake(self) -> None:
        futures, self._futures = self._futures, []
        for future in futures:
            if not future.done():  # a waiter that was cancelled
                future.set_result(None)


class WriteFlow:
    """A transport's write flow control as something to await: the protocol forwards
    ``pause_writing``/``resume_writing`` here, and wakes everyone when the connection is lost."""

    __slots__ = ("_waiters", "paused")

    def __init__(self) -> None:
        self.paused = False
        self._waiters = Waiters()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._waiters.wake()

    def release(self) -> None:
        """The connection is gone: nobody may stay parked (their writes are dropped)."""
        self._waiters.wake()

    async def wait(self) -> None:
        """Return at once unless paused; else once resumed or released."""
        if self.paused:
            await self._waiters.wait()
