"""Numbered generations of TCP workers, and the reload, restart and stop built from them.

- :meth:`Generations.start` spawns every slot of generation N and waits until each is ready;
  if one fails, the whole generation is discarded (all or nothing).
- :meth:`Generations.promote` makes it the serving one (the slots point at its handles).
- :meth:`Generations.retire` drains the previous one within a bounded grace, handing idle
  keep-alive connections to the new generation (process mode: the draining child sends each
  socket to this process, which passes it to a new child) so a client reusing one after the
  reload is served by the new code, and force-closes what remains.
- :meth:`Generations.reload` (zero downtime), for a batch of changed files, cheapest first:
  stylesheets only → open pages swap them (``browser-only``); templates and browser assets only →
  template caches dropped, pages reload (``template-only``), both without a new generation;
  anything else → re-import what the batch affects (thread mode: ``partial``/``wider``/``full``,
  see :mod:`devserve.reload.importer`) or fresh processes, start N+1, wait ready, promote, retire
  N. If N+1 fails, it is discarded and N keeps serving. An edit the running process cannot take
  (Django models, settings, a declaration a library refuses twice) goes to ``fresh_process``.
  :meth:`Generations.restart` (fallback): retire N, then start N+1 (queued connections wait in
  the kernel backlog meanwhile).
Callers hold the lifecycle lock (see :mod:`.coalesce`); crash respawns take it too.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from devserve.asgi.types import ASGIApp
from devserve.config import Config
from devserve.errors import DevserveError
from devserve.lifecycle import (
    BrowserRefresh,
    Event,
    GenerationPromoted,
    GenerationRetired,
    GenerationStarted,
    ReloadCompleted,
    ReloadFailed,
    ReloadStarted,
    ShutdownPhase,
    WorkerDraining,
    WorkerReady,
    WorkerSpawned,
    WorkerStopped,
)
from devserve.reload.frameworks import drop_template_caches
from devserve.reload.importer import FreshProcessNeeded, ReloadOutcome
from devserve.reload.reloader import strategy_for
from devserve.serve.h3 import AppRef
from devserve.supervision.collect import QuietCollector
from devserve.supervision.h3 import H3Workers
from devserve.supervision.handles import StartError, _parallel_join_targets, _WorkerHandle
from devserve.supervision.ipc import LivereloadError, Refresh
from devserve.supervision.launch import Launcher
from devserve.supervision.options import SupervisorOptions
from devserve.supervision.rollout import Exited, Promoted
from devserve.supervision.signals import StopRequest
from devserve.supervision.slots import SlotGroup
from devserve.supervision.stopping import shutdown_delay, stop_accepting

READY_TIMEOUT = 60.0
STOP_POLL = 0.005  # a stop (or a hand-over to a standby) ends this soon after the last worker
Handles = dict[int, _WorkerHandle]


class Generations:
    """The serving generation of TCP workers and how it is replaced."""

    def __init__(self, config: Config, app: ASGIApp | None, *, launcher: Launcher,
                 slots: SlotGroup[_WorkerHandle], h3: H3Workers, options: SupervisorOptions,
                 stop: StopRequest, emit: Callable[[Event], None],
                 on_fatal: Callable[[str], None],
                 fresh_process: Callable[[int, FreshProcessNeeded], None] | None = None
                 ) -> None:
        self._config = config
        self.app = app
        self._launcher = launcher
        self.slots = slots
        self.h3 = h3
        self._options = options
        self._stop = stop
        self._emit = emit
        self._on_fatal = on_fatal  # nothing can serve any more: the server must exit 1
        self._fresh_process = fresh_process  # an edit only a fresh process can take
        self._known_modules: dict[str, None] = {}  # process mode: project modules, in order
        self.number = 0
        self.lifespan_state: dict[str, Any] | None = None
        self._reloading = threading.Lock()  # held by a reload: no collection meanwhile
        self._collector = QuietCollector(self._activity, self._reloading, lambda: self.number)

    @property
    def count(self) -> int:
        return self._config.workers

    # -- one worker ------------------------------------------------------------------------
    def spawn(self, slot: int, *, generation: int | None = None, app: ASGIApp | None = None,
              run_lifespan: bool = True, state: dict[str, Any] | None = None,
              preload: tuple[str, ...] = ()) -> _WorkerHandle:
        """Create and start the worker of *slot* (the serving generation by default)."""
        gen = self.number if generation is None else generation
        if state is None and not run_lifespan:
            state = self.lifespan_state
        handle = self._launcher.spawn(slot, gen, app if app is not None else self.app,
                                      run_lifespan=run_lifespan, state=state, preload=preload)
        self._emit(WorkerSpawned(slot=slot, generation=gen, ident=handle.ident))
        return handle

    def respawn(self, slot: int) -> None:
        """Replace the dead worker of *slot* in the serving generation (lock held)."""
        shared = self._launcher.shares_lifespan and slot != 0
        state = self.lifespan_state
        first = self.slots.get(0)
        if shared and first is not None and first.worker is not None:
            state = first.worker.state.lifespan_state
        handle = self.spawn(slot, app=self.app, run_lifespan=not shared, state=state)
        self.slots.place(slot, handle)
        if self.wait_ready([handle]) is None:
            handle.apply(Promoted())

    def wait_ready(self, handles: list[_WorkerHandle]) -> StartError | None:
        deadline = time.monotonic() + READY_TIMEOUT
        # A stop asked for while generation 1 starts lets it finish starting (part of it may
        # serve already): the stop sequence then drains it like any other, losing nothing.
        # Only a forced stop abandons it; a reload is abandoned by any stop.
        first = self.number == 0
        for handle in handles:
            error = handle.wait_started(
                deadline, lambda: self._stop.forced if first else self._stop.requested)
            if error is not None:
                return error
            self._emit(WorkerReady(slot=handle.worker_id, generation=handle.generation,
                                   ident=handle.ident))
        return None

    def _stopped(self, handle: _WorkerHandle) -> None:
        if not handle.is_alive():
            handle.apply(Exited(clean=handle.exited_cleanly()))
        self._emit(WorkerStopped(slot=handle.worker_id, generation=handle.generation,
                                 forced=handle.is_alive()))

    # -- one generation --------------------------------------------------------------------
    def start(self, generation: int, app: ASGIApp | None, preload: tuple[str, ...] = ()
              ) -> tuple[Handles, StartError | None]:
        """Spawn every slot of *generation* and wait until each is ready (or one fails).
        *preload*: process mode, the project modules to import before a child is ready."""
        self._emit(GenerationStarted(generation=generation, workers=self.count))
        handles: Handles = {}
        slots = list(range(self.count))
        if self._launcher.shares_lifespan:
            # Slot 0 runs lifespan; the others start with its state once it is ready.
            first = handles[0] = self.spawn(0, generation=generation, app=app)
            error = self.wait_ready([first])
            if error is not None:
                self.discard(handles)
                return {}, error
            state = first.worker.state.lifespan_state if first.worker is not None else None
            for slot in slots[1:]:
                handles[slot] = self.spawn(slot, generation=generation, app=app,
                                           run_lifespan=False, state=state)
            pending = [handles[slot] for slot in slots[1:]]
        else:
            for slot in slots:
                handles[slot] = self.spawn(slot, generation=generation, app=app,
                                           preload=preload)
            pending = list(handles.values())
        error = self.wait_ready(pending)
        if error is not None:
            self.discard(handles)
            return {}, error
        return handles, None

    def start_first(self) -> StartError | None:
        """Generation 1 (or the one handed over), promoted when ready (its handles live on in
        the slots only, so it becomes garbage like any other once retired)."""
        over = self._options.handed_over
        generation = 1 if over is None else over.generation
        handles, error = self.start(generation, self.app)
        if error is None:
            self.promote(generation, handles, self.app, fresh_budgets=True)
            if over is not None:  # the reload that brought this process, for the displays
                took = time.monotonic() - over.started
                self._emit(ReloadStarted(generation=generation, strategy="process"))
                self._emit(ReloadCompleted(generation=generation, strategy="process",
                                           phases={"ready": took, "total": took},
                                           reason=over.reason))
        return error

    def discard(self, handles: Handles) -> None:
        """A generation that will never serve: close it now."""
        for handle in handles.values():
            handle.force()
        _parallel_join_targets([h.target for h in handles.values()], 2.0)
        for handle in handles.values():
            if handle.is_alive():
                handle.force_stop(1.0)
            self._stopped(handle)

    def promote(self, generation: int, handles: Handles, app: ASGIApp | None, *,
                fresh_budgets: bool) -> None:
        self.slots.replace(handles, fresh_budgets=fresh_budgets)
        for handle in handles.values():
            handle.apply(Promoted())
        self.number, self.app = generation, app
        self.h3.promote(generation, self._h3_ref(generation, handles))
        self._emit(GenerationPromoted(generation=generation, workers=len(handles),
                                      mode=self._launcher.mode))

    def _h3_ref(self, generation: int, handles: Handles) -> AppRef | None:
        """Thread mode: the (wrapped) app of *generation* and the lifespan state of its
        slot 0, for HTTP/3 streams. Process mode: None (each child imports its own)."""
        if not self._launcher.in_process or self.app is None:
            return None
        app = self.app
        if self._options.app_wrapper is not None:
            app = self._options.app_wrapper(app, generation)
        first = handles.get(0)
        state = self.lifespan_state
        if first is not None and first.worker is not None:
            state = first.worker.state.lifespan_state
        return AppRef(app, generation, state)

    def retire(self, old: Handles, new: Handles, grace: float) -> int:
        """Drain *old* within *grace*; returns how many connections had to be force-closed."""
        self._learn_modules(old)  # what it loaded while the new one started counts too
        new_workers = [h.worker for h in new.values() if h.worker is not None]
        children = [h for h in new.values() if h.channel is not None]
        for i, handle in enumerate(old.values()):
            if handle.worker is not None and new_workers:
                handle.worker.handoff = new_workers[i % len(new_workers)].adopt
            elif handle.channel is not None and children:  # process mode, via this process
                handle.handoff = children[i % len(children)].adopt
            self._emit(WorkerDraining(slot=handle.worker_id, generation=handle.generation))
            handle.start_draining(grace)
        _parallel_join_targets([h.target for h in old.values()], grace + 1.0)
        forced = 0
        for handle in old.values():
            if handle.worker is not None:
                forced += handle.worker.forced_connections
            if handle.is_alive():
                handle.force_stop(2.0)
            self._stopped(handle)
            if handle.channel is not None:
                handle.reader_done.wait(1.0)  # connections it handed over may be in the pipe
            handle.handoff = None  # no path from a retired worker to the new one
            if handle.worker is not None:
                handle.worker.handoff = handle.worker.state.handoff = None
        for gen in sorted({h.generation for h in old.values()}):
            self._emit(GenerationRetired(generation=gen, forced_connections=forced))
        return forced

    # -- reload, restart -------------------------------------------------------------------
    def _load_app(self, generation: int, strategy: str, changed: Collection[Path] | None
                  ) -> tuple[bool, ASGIApp | None, ReloadOutcome | None]:
        """Thread mode: re-import what *changed* affects (process children import their own).
        Returns (loaded, app, outcome); not loaded when it failed (reported) or escalated."""
        loader = self._options.app_loader
        if not self._launcher.in_process or loader is None:
            return True, self.app, None
        try:
            outcome = loader(changed)
        except FreshProcessNeeded as exc:
            if self._fresh_process is None:
                self.report_failed(generation, strategy, StartError(exc.one_line()))
            else:
                self._fresh_process(generation, exc)
            return False, None, None
        except DevserveError as exc:
            self.report_failed(generation, strategy, StartError(
                exc.one_line(), getattr(exc, "traceback_text", None),
                getattr(exc, "location", None)))
            return False, None, None
        return True, outcome.loaded.app, outcome

    def report_failed(self, generation: int, strategy: str, error: StartError) -> None:
        self._emit(ReloadFailed(generation=generation, strategy=strategy, error=error.message,
                                location=error.location, traceback=error.traceback,
                                serving_generation=self.number))
        if not self._launcher.in_process and self._config.livereload:
            # Children run their own livereload hubs: tell their browsers.
            for handle in self.slots.handles().values():
                handle.send(LivereloadError(error.message, error.location, error.traceback))

    def _activity(self) -> tuple[int, int]:
        """(requests in flight, requests started so far) over the serving workers."""
        workers = [h.worker for h in self.slots.handles().values() if h.worker is not None]
        return (sum(w.in_flight for w in workers),
                sum(w.state.total_requests for w in workers))

    def reload(self, changed: Collection[Path] | None = None) -> None:
        """Serve the edit in *changed* (None: everything) the cheapest trustworthy way."""
        before = self.number
        with self._reloading:
            self._collector.collect_pending()
            self._reload(changed)
        if self._launcher.in_process and self.number != before:
            self._collector.request()  # the retired generation, once requests pause

    def _reload(self, changed: Collection[Path] | None) -> None:
        strategy = "reimport" if changed is None else strategy_for(changed)
        if strategy in ("browser-only", "template-only"):
            self.refresh(strategy, changed or ())
            return
        started = time.monotonic()
        generation = self.number + 1
        strategy = self._launcher.reload_strategy
        self._emit(ReloadStarted(generation=generation, strategy=strategy))
        loaded, app, outcome = self._load_app(generation, strategy, changed)
        if not loaded:
            return
        phases: dict[str, float] = {}
        if outcome is not None:
            phases["import"] = time.monotonic() - started
        handles, error = self.start(generation, app, self._loaded_modules())
        if error is not None:
            self.report_failed(generation, strategy, error)
            return
        phases["ready"] = time.monotonic() - started
        old = self.slots.handles()
        self.promote(generation, handles, app, fresh_budgets=True)
        self.retire(old, handles, self._options.reload_grace)
        phases["drained"] = phases["total"] = time.monotonic() - started
        self._emit(ReloadCompleted(
            generation=generation,
            strategy=outcome.strategy if outcome is not None else strategy,
            phases=phases, modules=len(outcome.reexecuted) if outcome is not None else None,
            reason=outcome.reason if outcome is not None else None))
        del old, handles, app, outcome

    def _loaded_modules(self) -> tuple[str, ...]:
        """Process mode: every project module a generation has loaded (lazily imported views
        too: the serving one, and what retired ones loaded while a reload was under way), which
        the next generation imports before it is promoted; thread mode re-imports in place."""
        if self._launcher.in_process:
            return ()
        self._learn_modules(self.slots.handles())
        return tuple(self._known_modules)

    def _learn_modules(self, handles: Handles) -> None:
        first = handles.get(0)
        if first is not None and not self._launcher.in_process:
            self._known_modules.update(dict.fromkeys(first.loaded_modules(5.0)))

    def refresh(self, strategy: str, changed: Collection[Path]) -> None:
        """No new generation: template engines forget compiled templates (``template-only``)
        and open pages swap stylesheets or reload (``browser-only``: stylesheets alone)."""
        started = time.monotonic()
        templates = strategy == "template-only"
        kind = "page" if templates else "css"
        paths = tuple(sorted(str(p) for p in changed))
        self._emit(ReloadStarted(generation=self.number, strategy=strategy))
        if self._launcher.in_process:
            if templates:
                drop_template_caches(self.app)
        else:
            for handle in self.slots.handles().values():
                handle.send(Refresh(kind, paths, templates))
        self._emit(BrowserRefresh(kind=kind, paths=paths))
        self._emit(ReloadCompleted(generation=self.number, strategy=strategy,
                                   phases={"total": time.monotonic() - started}))

    def restart(self) -> None:
        """Stop-then-start: a brief gap in which queued connections wait in the backlog."""
        started = time.monotonic()
        generation = self.number + 1
        self._emit(ReloadStarted(generation=generation, strategy="restart"))
        loaded, app, _ = self._load_app(generation, "restart", None)
        if not loaded:
            return
        self.retire(self.slots.handles(), {}, self._options.reload_grace)
        self.slots.clear()
        handles, error = self.start(generation, app)
        if error is not None:
            # Nothing serves now: fall back to the previous app so the slots are not empty.
            self.report_failed(generation, "restart", error)
            app = self.app
            handles, error = self.start(generation, app)
            if error is not None:
                self._on_fatal(error.message)
                return
        self.promote(generation, handles, app, fresh_budgets=False)
        self._emit(ReloadCompleted(generation=generation, strategy="restart",
                                   phases={"total": time.monotonic() - started}))

    # -- stop ------------------------------------------------------------------------------
    def shutdown(self, grace: float) -> None:
        """Every serving worker finishes in-flight requests within *grace* and answers what
        still arrives on its open connections with ``Connection: close``."""
        for handle in self.slots.handles().values():
            self._emit(WorkerDraining(slot=handle.worker_id, generation=handle.generation))
            handle.shutdown(grace)

    def stop_all(self, grace: float, sockets: Sequence[socket.socket] = ()) -> None:
        """Final stop (see :mod:`.stopping`): health 503 for ``--shutdown-delay``, close the
        listener (*sockets*, the Supervisor's own fds, first) so new connections are refused,
        drain everything within *grace* (per worker; cut short by a forced stop), close what
        remains, tear down what outlived the generations."""
        handles = list(self.slots.handles().values())
        shutdown_delay([*handles, *self.h3.slots.handles().values()],
                       self._config.shutdown_delay, self._stop, self._emit)
        stop_accepting(sockets, handles)
        self._emit(ShutdownPhase(phase="draining", seconds=grace))
        self.shutdown(grace)
        self.h3.stop_all(grace)
        deadline = time.monotonic() + grace + 1.0
        while ((any(h.is_alive() for h in handles) or self.h3.alive())
               and time.monotonic() < deadline and not self._stop.forced):
            self._stop.wait_forced(STOP_POLL)  # a second Ctrl+C cuts the wait short
        for handle in handles:
            if handle.is_alive():
                handle.force_stop(2.0)
            self._stopped(handle)
        self.h3.finish_all()
        self._launcher.close()
