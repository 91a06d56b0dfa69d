"""ASGI lifespan: run the app's startup before serving and its shutdown after draining.

``--lifespan auto`` tolerates apps that do not speak the protocol (they raise or return at once);
``on`` makes that an error. The ``state`` dict the app fills during startup is copied into every
request scope by the workers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from devserve.asgi.types import ASGIApp, Message

logger = logging.getLogger("devserve.error")


class LifespanFailed(Exception):
    """Startup or shutdown failed; ``message`` is what the app reported or raised."""


class Lifespan:
    """One lifespan session of one app on one event loop."""

    def __init__(self, app: ASGIApp, mode: str = "auto") -> None:
        self.app = app
        self.mode = mode
        self.state: dict[str, Any] = {}
        self.supported = mode != "off"
        self._receive_queue: asyncio.Queue[Message] = asyncio.Queue()
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._startup_failed: str | None = None
        self._shutdown_failed: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        """Run startup; raise :class:`LifespanFailed` if the app reports failure."""
        if self.mode == "off":
            return
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._receive_queue.put({"type": "lifespan.startup"})
        await self._startup_done.wait()
        if self._startup_failed is not None:
            raise LifespanFailed(self._startup_failed)

    async def shutdown(self, timeout: float | None = None) -> None:
        """Run shutdown (bounded by *timeout*); failures are logged, never raised."""
        if not self.supported or self._task is None or self._task.done():
            return
        await self._receive_queue.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._shutdown_done.wait(), timeout)
        except TimeoutError:
            logger.error("Lifespan shutdown did not complete within %.1fs", timeout)
            self._task.cancel()
        if self._shutdown_failed is not None:
            logger.error("Lifespan shutdown failed: %s", self._shutdown_failed)

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            if self._startup_failed is not None:
                logger.error("Exception in lifespan startup", exc_info=exc)
            elif self._startup_done.is_set():
                self._shutdown_failed = f"{type(exc).__name__}: {exc}"
                logger.error("Exception in lifespan shutdown", exc_info=exc)
            elif self.mode == "auto":
                self.supported = False
                logger.info("ASGI 'lifespan' protocol appears unsupported.")
            else:
                self._startup_failed = f"{type(exc).__name__}: {exc}"
                logger.error("Exception in lifespan startup", exc_info=exc)
        else:
            if not self._startup_done.is_set():
                # The app returned without answering startup: it does not do lifespan.
                if self.mode == "on":
                    self._startup_failed = "the app returned without completing startup"
                else:
                    self.supported = False
        finally:
            self._startup_done.set()
            self._shutdown_done.set()

    async def _receive(self) -> Message:
        return await self._receive_queue.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._startup_done.set()
        elif kind == "lifespan.startup.failed":
            self._startup_failed = str(message.get("message", "")) or "startup failed"
            self._startup_done.set()
        elif kind == "lifespan.shutdown.complete":
            self._shutdown_done.set()
        elif kind == "lifespan.shutdown.failed":
            self._shutdown_failed = str(message.get("message", "")) or "shutdown failed"
            self._shutdown_done.set()
        else:
            raise RuntimeError(f"ASGI: unexpected lifespan message {kind!r}")
