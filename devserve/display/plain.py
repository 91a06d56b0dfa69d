"""Non-TTY output: one readable log line per notable event, or one JSON object per event.

Both are plain collectors; they never hold a lock while writing and never raise into the
server (the fan-out collector guards them too).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import IO, Any

from devserve import lifecycle as ev
from devserve.display.model import phase_text

logger = logging.getLogger("devserve.error")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe(e: ev.Event) -> tuple[int, str] | None:
    """(log level, line) for an event worth a line; None for the rest (requests, gauges)."""
    if isinstance(e, ev.ServerStarting):
        lines = [f"Listening on {url} (Press CTRL+C to quit)" for url in e.urls]
        lines.append(f"Worker mode: {e.mode}, {_plural(e.workers, 'worker')} ({e.mode_reason})")
        return logging.INFO, "\n".join(lines)
    if isinstance(e, ev.GenerationPromoted):
        return logging.INFO, (
            f"Serving generation {e.generation} with {e.workers} {e.mode} worker"
            + ("" if e.workers == 1 else "s")
        )
    if isinstance(e, ev.ReloadRequested):
        names = ", ".join(e.trigger[:3]) + (f" (+{len(e.trigger) - 3} more)"
                                            if len(e.trigger) > 3 else "")
        return logging.INFO, f"Change detected in {names or 'files'}: reloading"
    if isinstance(e, ev.ReloadCompleted):
        ms = {k: v * 1000 for k, v in e.phases.items()}
        how = e.strategy + ("" if e.modules is None else
                            f", {_plural(e.modules, 'module')} re-executed")
        why = f"; {e.reason}" if e.reason else ""
        if "ready" in ms:
            return logging.INFO, (
                f"Reloaded: generation {e.generation} ready in {ms['ready']:.0f} ms "
                f"({how}), previous drained in "
                f"{ms.get('drained', ms['ready']) - ms['ready']:.0f} ms{why}"
            )
        if e.strategy in ("template-only", "browser-only"):
            return logging.INFO, (
                f"Refreshed without a new generation ({how}) in {ms.get('total', 0.0):.0f} ms"
            )
        return logging.INFO, (
            f"Restarted: generation {e.generation} in {ms.get('total', 0.0):.0f} ms{why}"
        )
    if isinstance(e, ev.ReloadFailed):
        tail = f"\n{e.traceback.rstrip()}" if e.traceback else ""
        return logging.ERROR, (
            f"Reload failed, generation {e.serving_generation} keeps serving: {e.error}{tail}"
        )
    if isinstance(e, ev.WorkerRespawnScheduled):
        return logging.WARNING, (
            f"Worker {e.slot} ({e.ident}) died: {e.reason}; respawning in {e.backoff:.1f}s "
            f"({e.restarts_used}/{e.budget} restarts)"
        )
    if isinstance(e, ev.WorkerBudgetExhausted):
        return logging.ERROR, (
            f"Worker {e.slot} exhausted its restart budget ({e.budget} in {e.window:.0f}s); "
            f"slot failed: {e.reason}"
        )
    if isinstance(e, ev.ServerStopping):
        if e.error:
            return logging.ERROR, e.reason
        return logging.INFO, f"Shutting down ({e.reason})"
    if isinstance(e, ev.ShutdownPhase):
        text = phase_text(e)
        return logging.INFO, text[:1].upper() + text[1:]
    if isinstance(e, ev.LogLine):
        return logging.getLevelNamesMapping().get(e.level.upper(), logging.INFO), e.message
    return None


class PlainLog:
    """Writes :func:`describe` lines through the ``devserve.error`` logger."""

    def emit(self, event: ev.Event) -> None:
        described = describe(event)
        if described is not None:
            level, text = described
            lines = text.split("\n") if isinstance(event, ev.ServerStarting) else [text]
            for line in lines:
                logger.log(level, "%s", line)


class JsonLog:
    """``--log-format json``: one JSON object per event on *stream* (requests included)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def emit(self, event: ev.Event) -> None:
        data: dict[str, Any] = event.to_dict()
        line = json.dumps(data, default=str)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()
