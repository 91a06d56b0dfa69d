"""Typed lifecycle events and the collectors that receive them.

Every step the server takes is one frozen dataclass with a monotonic timestamp. Producers call
``collector.emit(event)``; displays (dashboard, plain log, JSON) only ever *read* events. When no
collector is attached the producers hold ``None`` and skip building events entirely, so an
unobserved server pays nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

_error_log = logging.getLogger("devserve.error")


def _now() -> float:
    return time.monotonic()


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every lifecycle event."""

    ts: float = field(default_factory=_now)

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["event"] = self.kind
        return data


# -- server ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStarting(Event):
    app: str
    urls: tuple[str, ...]
    mode: str
    mode_reason: str
    workers: int
    pid: int
    gil_enabled: bool
    python: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStopping(Event):
    reason: str
    error: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ShutdownPhase(Event):
    """Where a stop is: ``delay`` (``--shutdown-delay``: the health endpoint answers 503 for
    *seconds* while everything else is served), then ``draining`` (new connections refused,
    in-flight requests finish within *seconds*)."""

    phase: str  # "delay" | "draining"
    seconds: float


# -- workers ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSpawned(Event):
    slot: int
    generation: int
    ident: str  # pid or thread name


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerReady(Event):
    slot: int
    generation: int
    ident: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerDraining(Event):
    slot: int
    generation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStopped(Event):
    slot: int
    generation: int
    forced: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerCrashed(Event):
    slot: int
    generation: int
    reason: str
    traceback: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRespawnScheduled(Event):
    slot: int
    ident: str
    reason: str
    restarts_used: int
    budget: int
    window: float
    backoff: float


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerBudgetExhausted(Event):
    slot: int
    restarts_used: int
    budget: int
    reason: str
    window: float = 60.0


# -- generations & reloads -------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationStarted(Event):
    generation: int
    workers: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationPromoted(Event):
    generation: int
    workers: int = 0
    mode: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationRetired(Event):
    generation: int
    forced_connections: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadRequested(Event):
    trigger: tuple[str, ...] = ()
    strategy: str = "reimport"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadStarted(Event):
    generation: int
    strategy: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadCompleted(Event):
    """A reload served the edit. *strategy*: ``partial`` / ``wider`` / ``full`` (in-process
    re-import), ``process`` (fresh processes), ``template-only``, ``browser-only``, ``restart``;
    *modules*: how many project modules were re-executed (None when not known: process mode);
    *reason*: why a cheaper strategy was not enough (an escalation), else None."""

    generation: int
    strategy: str
    phases: dict[str, float]  # phase name -> seconds (import, ready, drained, total)
    modules: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BrowserRefresh(Event):
    """Open pages should swap stylesheets (``kind="css"``) or reload (``"page"``); no new
    generation is needed (the livereload hub and process children act on it)."""

    kind: str
    paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadFailed(Event):
    generation: int
    strategy: str
    error: str
    serving_generation: int = 0
    location: str | None = None
    traceback: str | None = None


# -- traffic ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class RequestCompleted(Event):
    slot: int
    generation: int
    method: str
    path: str
    status: int
    duration: float
    http_version: str = "1.1"
    client: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStats(Event):
    """Periodic gauge from a worker (only when a display is attached)."""

    slot: int
    generation: int
    connections: int
    in_flight: int
    requests: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LogLine(Event):
    """Output that must appear above a live display (worker output, server log records)."""

    level: str
    message: str


@runtime_checkable
class LifecycleCollector(Protocol):
    """Anything that accepts events; must be cheap and thread-safe."""

    def emit(self, event: Event) -> None: ...


class FanOutCollector:
    """Delivers each event to every attached collector; one failing sink never stops others.

    A sink's first failure is logged with its traceback (``devserve.error``); later ones are
    not, so a broken display cannot flood the log — but it never fails silently either.
    """

    def __init__(self, *sinks: LifecycleCollector) -> None:
        self._sinks: list[LifecycleCollector] = list(sinks)
        self._lock = threading.Lock()
        self._failed: set[int] = set()  # id() of sinks whose failure was logged

    def add(self, sink: LifecycleCollector) -> None:
        with self._lock:
            self._sinks = [*self._sinks, sink]

    def emit(self, event: Event) -> None:
        for sink in self._sinks:
            try:
                sink.emit(event)
            except Exception:  # a display bug must never take the server down
                self._report(sink, event)

    def _report(self, sink: LifecycleCollector, event: Event) -> None:
        with self._lock:
            if id(sink) in self._failed:
                return
            self._failed.add(id(sink))
        _error_log.exception("%s failed on %s; its later failures are not logged",
                             type(sink).__name__, event.kind)


class RecordingCollector:
    """Keeps every event in memory; used by tests and by the display's replay."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)

    def emit(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def of_type(self, kind: type[Event]) -> list[Event]:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]

    def wait_for(self, kind: type[Event], count: int = 1, timeout: float = 10.0) -> list[Event]:
        """Block until *count* events of *kind* arrived; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.events if isinstance(e, kind)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{count} x {kind.__name__} not seen in {timeout}s")
                self._cond.wait(remaining)
