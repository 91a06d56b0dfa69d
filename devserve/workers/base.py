"""The structural contract every TCP worker (async ``Worker`` and ``SyncWorker``) meets."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TCPWorker(Protocol):
    """What the Supervisor needs to spawn, drain and retire a worker."""

    def run(self) -> None:
        """Serve until stopped; blocks the calling thread or process."""

    def set_lifespan_state(self, state: dict[str, Any]) -> None:
        """Use *state* (from a lifespan run elsewhere) as the base of each request scope."""

    def start_draining(self) -> None:
        """Stop accepting, finish in-flight requests, close idle connections, then exit."""

    def is_idle(self) -> bool:
        """True when no request is in flight."""
