"""A pure reducer from lifecycle events to an immutable snapshot of what the server is doing.

No I/O and no rich here: ``reduce(snapshot, event)`` returns a new :class:`Snapshot`, so the
dashboard, the tests and any other view agree on one model, and a recorded event sequence can be
replayed step by step.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field, replace

from devserve import lifecycle as ev

MAX_RELOADS = 8
MAX_REQUESTS = 12
RATE_WINDOW = 5.0  # seconds of RequestCompleted events used for req/s


@dataclass(frozen=True, slots=True)
class WorkerRow:
    slot: int
    generation: int
    ident: str = ""
    state: str = "starting"  # starting | ready | draining | stopped | crashed | failed
    connections: int = 0
    in_flight: int = 0
    requests: int = 0
    restarts_used: int = 0
    budget: int = 5
    next_backoff: float | None = None
    started_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ReloadRow:
    generation: int
    strategy: str
    trigger: tuple[str, ...] = ()
    requested_at: float | None = None
    started_at: float = 0.0
    phases: tuple[tuple[str, float], ...] = ()
    outcome: str = "running"  # running | ok | failed
    error: str | None = None
    modules: int | None = None  # project modules re-executed
    reason: str | None = None  # why the strategy escalated


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    message: str
    location: str | None = None
    traceback: str | None = None
    ts: float = 0.0


@dataclass(frozen=True, slots=True)
class RequestRow:
    method: str
    path: str
    status: int
    duration: float
    ts: float
    http_version: str = "1.1"


@dataclass(frozen=True, slots=True)
class Snapshot:
    app: str = ""
    urls: tuple[str, ...] = ()
    mode: str = ""
    mode_reason: str = ""
    gil_enabled: bool = True
    python: str = ""
    pid: int = 0
    started_at: float = 0.0
    generation: int = 0
    workers: tuple[WorkerRow, ...] = ()
    reloads: tuple[ReloadRow, ...] = ()
    error: ErrorInfo | None = None
    requests: tuple[RequestRow, ...] = ()
    request_times: tuple[float, ...] = field(default=(), repr=False)
    total_requests: int = 0
    stopping: str | None = None
    stop_phase: str | None = None  # where the stop is (shutdown delay, draining)
    pending_trigger: tuple[str, ...] = ()
    pending_requested_at: float | None = None

    def req_per_second(self, now: float) -> float:
        times = self.request_times
        return (len(times) - bisect_left(times, now - RATE_WINDOW)) / RATE_WINDOW


def _set_worker(s: Snapshot, slot: int, generation: int, **changes: object) -> Snapshot:
    rows = list(s.workers)
    for i, row in enumerate(rows):
        if row.slot == slot and row.generation == generation:
            rows[i] = replace(row, **changes)  # type: ignore[arg-type]
            return replace(s, workers=tuple(rows))
    new = replace(WorkerRow(slot=slot, generation=generation), **changes)  # type: ignore[arg-type]
    return replace(s, workers=tuple(sorted([*rows, new], key=lambda r: (r.slot, r.generation))))


def _prune_workers(s: Snapshot) -> Snapshot:
    """Keep the current generation and anything not yet stopped; drop retired rows."""
    rows = tuple(r for r in s.workers if r.state != "stopped" or r.generation == s.generation)
    return replace(s, workers=rows)


def _carry_budget(s: Snapshot, slot: int) -> tuple[int, int]:
    """Restarts used/budget belong to the slot: a new row inherits the newest known values."""
    rows = [r for r in s.workers if r.slot == slot]
    if not rows:
        return 0, 5
    newest = max(rows, key=lambda r: r.generation)
    return newest.restarts_used, newest.budget


def _update_reload(s: Snapshot, generation: int, **changes: object) -> Snapshot:
    rows = list(s.reloads)
    for i in range(len(rows) - 1, -1, -1):
        if rows[i].generation == generation:
            rows[i] = replace(rows[i], **changes)  # type: ignore[arg-type]
            return replace(s, reloads=tuple(rows))
    return s


def reduce(s: Snapshot, e: ev.Event) -> Snapshot:
    """The snapshot after *e*. Unknown events leave it unchanged."""
    if isinstance(e, ev.RequestCompleted):
        return reduce_requests(s, [e])
    if isinstance(e, ev.WorkerStats):
        return _set_worker(s, e.slot, e.generation, connections=e.connections,
                           in_flight=e.in_flight, requests=e.requests)
    if isinstance(e, ev.ServerStarting):
        return replace(s, app=e.app, urls=e.urls, mode=e.mode, mode_reason=e.mode_reason,
                       gil_enabled=e.gil_enabled, python=e.python, pid=e.pid, started_at=e.ts)
    if isinstance(e, ev.WorkerSpawned):
        used, budget = _carry_budget(s, e.slot)
        return _set_worker(s, e.slot, e.generation, ident=e.ident, state="starting",
                           started_at=e.ts, restarts_used=used, budget=budget,
                           next_backoff=None, connections=0, in_flight=0, requests=0)
    if isinstance(e, ev.WorkerReady):
        return _set_worker(s, e.slot, e.generation, ident=e.ident, state="ready")
    if isinstance(e, ev.WorkerDraining):
        return _set_worker(s, e.slot, e.generation, state="draining")
    if isinstance(e, ev.WorkerStopped):
        return _prune_workers(_set_worker(s, e.slot, e.generation, state="stopped"))
    if isinstance(e, ev.WorkerCrashed):
        return _set_worker(s, e.slot, e.generation, state="crashed")
    if isinstance(e, ev.WorkerRespawnScheduled):
        rows = tuple(
            replace(r, restarts_used=e.restarts_used, budget=e.budget, next_backoff=e.backoff)
            if r.slot == e.slot else r for r in s.workers
        )
        return replace(s, workers=rows)
    if isinstance(e, ev.WorkerBudgetExhausted):
        rows = tuple(
            replace(r, state="failed", restarts_used=e.restarts_used, budget=e.budget,
                    next_backoff=None)
            if r.slot == e.slot and r.state in ("crashed", "failed") else r
            for r in s.workers
        )
        error = ErrorInfo(f"worker slot {e.slot} failed: {e.reason}", ts=e.ts)
        return replace(s, workers=rows, error=error)
    if isinstance(e, ev.GenerationPromoted):
        return _prune_workers(replace(s, generation=e.generation))
    if isinstance(e, ev.ReloadRequested):
        return replace(s, pending_trigger=e.trigger, pending_requested_at=e.ts)
    if isinstance(e, ev.ReloadStarted):
        last = s.reloads[-1] if s.reloads else None
        if last is not None and last.generation == e.generation and last.outcome == "running":
            # The reload under way escalated (to a fresh process): one row, its new strategy.
            return replace(s, reloads=(*s.reloads[:-1], replace(last, strategy=e.strategy)))
        row = ReloadRow(generation=e.generation, strategy=e.strategy, trigger=s.pending_trigger,
                        requested_at=s.pending_requested_at, started_at=e.ts)
        return replace(s, reloads=(*s.reloads, row)[-MAX_RELOADS:], pending_trigger=(),
                       pending_requested_at=None)
    if isinstance(e, ev.ReloadCompleted):
        phases = tuple(e.phases.items())
        s = _update_reload(s, e.generation, outcome="ok", phases=phases, strategy=e.strategy,
                           modules=e.modules, reason=e.reason)
        # A good reload clears the error and gives every slot a clean restart budget.
        rows = tuple(replace(r, restarts_used=0, next_backoff=None) for r in s.workers)
        return replace(s, error=None, workers=rows)
    if isinstance(e, ev.ReloadFailed):
        s = _update_reload(s, e.generation, outcome="failed", error=e.error)
        s = _prune_workers(s)
        return replace(s, error=ErrorInfo(e.error, e.location, e.traceback, e.ts))
    if isinstance(e, ev.ServerStopping):
        return replace(s, stopping=e.reason)
    if isinstance(e, ev.ShutdownPhase):
        return replace(s, stop_phase=phase_text(e))
    return s


def phase_text(e: ev.ShutdownPhase) -> str:
    """How a stop's phase reads, on the dashboard and in the log."""
    if e.phase == "delay":
        return f"shutdown delay: health 503 for {e.seconds:g} s"
    return f"draining: new connections refused, in-flight requests finish within {e.seconds:g} s"


def reduce_requests(s: Snapshot, events: list[ev.RequestCompleted]) -> Snapshot:
    """Fold a batch of finished requests at once: at thousands of requests a second the
    dashboard folds once per frame, not once per request."""
    if not events:
        return s
    rows = tuple(
        RequestRow(e.method, e.path, e.status, e.duration, e.ts, e.http_version)
        for e in events[-MAX_REQUESTS:]
    )
    times = s.request_times + tuple(e.ts for e in events)
    times = times[bisect_left(times, times[-1] - RATE_WINDOW):]
    return replace(s, requests=(s.requests + rows)[-MAX_REQUESTS:], request_times=times,
                   total_requests=s.total_requests + len(events))


def reduce_all(s: Snapshot, events: list[ev.Event]) -> Snapshot:
    for e in events:
        s = reduce(s, e)
    return s


def clear_error(s: Snapshot) -> Snapshot:
    return replace(s, error=None)
