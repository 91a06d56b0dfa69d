"""The pure reducer behind every view: replay a recorded lifecycle event sequence through
``reduce(snapshot, event)`` and check the snapshot after each step.

The sequence is what a real ``devserve app:app --reload`` run emits (same order, same fields,
as produced by ``supervisor.py``): start, a good reload to generation 2, a reload that fails on
a syntax error (generation 2 keeps serving), a worker crash and respawn in the same generation,
a good reload that clears the error and resets the restart budget, a slot that exhausts its
budget, traffic and worker gauges. Timestamps are fixed so req/s is exact.
"""

from __future__ import annotations

import dataclasses

import pytest

from devserve import lifecycle as ev
from devserve.display import model
from devserve.display.model import Snapshot, WorkerRow, reduce, reduce_all

T0 = 1000.0
URL = "http://127.0.0.1:8123"
TB = (
    'Traceback (most recent call last):\n  File "/proj/app.py", line 7\n'
    "    def broken(:\n               ^\nSyntaxError: invalid syntax\n"
)


def starting() -> ev.ServerStarting:
    return ev.ServerStarting(
        ts=T0, app="app:app", urls=(URL,), mode="thread",
        mode_reason="--reload with one worker re-imports in-process", workers=1, pid=4242,
        gil_enabled=True, python="3.11.7",
    )


def boot_events() -> list[ev.Event]:
    return [
        starting(),
        ev.GenerationStarted(ts=T0 + 0.01, generation=1, workers=1),
        ev.WorkerSpawned(ts=T0 + 0.02, slot=0, generation=1, ident="devserve-g1-w0"),
        ev.WorkerReady(ts=T0 + 0.05, slot=0, generation=1, ident="devserve-g1-w0"),
        ev.GenerationPromoted(ts=T0 + 0.06, generation=1, workers=1, mode="thread"),
    ]


def only_worker(s: Snapshot) -> WorkerRow:
    assert len(s.workers) == 1, s.workers
    return s.workers[0]


def step(s: Snapshot, event: ev.Event) -> Snapshot:
    new = reduce(s, event)
    # The reducer never mutates: the old snapshot is untouched and still hashable/frozen.
    assert isinstance(new, Snapshot)
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.generation = 99  # type: ignore[misc]
    return new


def test_recorded_sequence_step_by_step() -> None:
    s = Snapshot()
    assert s.workers == () and s.error is None and s.generation == 0

    # -- start-up ------------------------------------------------------------------------
    s = step(s, starting())
    assert (s.app, s.urls, s.mode, s.pid, s.python) == ("app:app", (URL,), "thread", 4242,
                                                         "3.11.7")
    assert s.mode_reason.startswith("--reload") and s.gil_enabled is True
    assert s.started_at == T0 and s.generation == 0 and s.workers == ()

    before = s
    s = step(s, ev.GenerationStarted(ts=T0 + 0.01, generation=1, workers=1))
    assert s is before  # nothing to show until a worker exists

    s = step(s, ev.WorkerSpawned(ts=T0 + 0.02, slot=0, generation=1, ident="devserve-g1-w0"))
    row = only_worker(s)
    assert (row.slot, row.generation, row.ident, row.state) == (0, 1, "devserve-g1-w0",
                                                               "starting")
    assert (row.restarts_used, row.budget, row.next_backoff) == (0, 5, None)
    assert row.started_at == T0 + 0.02

    s = step(s, ev.WorkerReady(ts=T0 + 0.05, slot=0, generation=1, ident="devserve-g1-w0"))
    assert only_worker(s).state == "ready"
    assert s.generation == 0  # ready is not promoted yet

    s = step(s, ev.GenerationPromoted(ts=T0 + 0.06, generation=1, workers=1, mode="thread"))
    assert s.generation == 1 and only_worker(s).state == "ready"
    assert s.reloads == ()

    # -- a good reload: overlap generations 1 and 2 -------------------------------------
    s = step(s, ev.ReloadRequested(ts=T0 + 10.0, trigger=("app.py",), strategy="reimport"))
    assert s.pending_trigger == ("app.py",) and s.pending_requested_at == T0 + 10.0
    assert s.reloads == ()

    s = step(s, ev.ReloadStarted(ts=T0 + 10.05, generation=2, strategy="reimport"))
    assert len(s.reloads) == 1
    r = s.reloads[0]
    assert (r.generation, r.strategy, r.trigger, r.outcome) == (2, "reimport", ("app.py",),
                                                                "running")
    assert r.requested_at == T0 + 10.0 and r.started_at == T0 + 10.05
    assert s.pending_trigger == () and s.pending_requested_at is None

    s = step(s, ev.GenerationStarted(ts=T0 + 10.06, generation=2, workers=1))
    s = step(s, ev.WorkerSpawned(ts=T0 + 10.07, slot=0, generation=2, ident="devserve-g2-w0"))
    assert [(w.slot, w.generation, w.state) for w in s.workers] == [
        (0, 1, "ready"), (0, 2, "starting")]

    s = step(s, ev.WorkerReady(ts=T0 + 10.09, slot=0, generation=2, ident="devserve-g2-w0"))
    s = step(s, ev.GenerationPromoted(ts=T0 + 10.1, generation=2, workers=1, mode="thread"))
    assert s.generation == 2
    # The old generation stays visible until it has drained.
    assert [(w.generation, w.state) for w in s.workers] == [(1, "ready"), (2, "ready")]

    s = step(s, ev.WorkerDraining(ts=T0 + 10.1, slot=0, generation=1))
    assert [(w.generation, w.state) for w in s.workers] == [(1, "draining"), (2, "ready")]

    s = step(s, ev.WorkerStopped(ts=T0 + 10.2, slot=0, generation=1))
    row = only_worker(s)  # the retired row is pruned
    assert (row.generation, row.state, row.ident) == (2, "ready", "devserve-g2-w0")

    s = step(s, ev.GenerationRetired(ts=T0 + 10.2, generation=1))
    phases = {"import": 0.02, "ready": 0.05, "drained": 0.15, "total": 0.15}
    s = step(s, ev.ReloadCompleted(ts=T0 + 10.2, generation=2, strategy="reimport",
                                   phases=phases))
    r = s.reloads[-1]
    assert r.outcome == "ok" and dict(r.phases) == phases and r.error is None
    assert s.error is None

    # -- a failed reload (syntax error): generation 2 keeps serving ---------------------
    s = step(s, ev.ReloadRequested(ts=T0 + 20.0, trigger=("app.py",)))
    s = step(s, ev.ReloadStarted(ts=T0 + 20.01, generation=3, strategy="reimport"))
    assert [r.outcome for r in s.reloads] == ["ok", "running"]
    s = step(s, ev.ReloadFailed(
        ts=T0 + 20.03, generation=3, strategy="reimport",
        error="error while importing 'app': SyntaxError: invalid syntax (/proj/app.py:7)",
        serving_generation=2, location="/proj/app.py:7", traceback=TB,
    ))
    assert [(r.generation, r.outcome) for r in s.reloads] == [(2, "ok"), (3, "failed")]
    assert "SyntaxError" in (s.reloads[-1].error or "")
    assert s.error is not None
    assert s.error.location == "/proj/app.py:7"
    assert s.error.traceback == TB and "SyntaxError: invalid syntax" in s.error.message
    assert s.error.ts == T0 + 20.03
    assert s.generation == 2
    row = only_worker(s)
    assert (row.generation, row.state) == (2, "ready")

    # -- worker crash, respawn scheduled, respawned in the same generation ----------------
    s = step(s, ev.WorkerCrashed(ts=T0 + 30.0, slot=0, generation=2, reason="exit code 1",
                                 traceback="RuntimeError: boom"))
    assert only_worker(s).state == "crashed"
    s = step(s, ev.WorkerRespawnScheduled(ts=T0 + 30.0, slot=0, ident="devserve-g2-w0",
                                          reason="exit code 1", restarts_used=1, budget=5,
                                          window=60.0, backoff=0.5))
    row = only_worker(s)
    assert (row.state, row.restarts_used, row.budget, row.next_backoff) == ("crashed", 1, 5,
                                                                            0.5)

    s = step(s, ev.WorkerSpawned(ts=T0 + 30.5, slot=0, generation=2, ident="devserve-g2-w0b"))
    row = only_worker(s)  # same slot and generation: the row is replaced, not duplicated
    assert (row.state, row.ident) == ("starting", "devserve-g2-w0b")
    assert (row.restarts_used, row.budget) == (1, 5)  # the budget belongs to the slot
    assert row.next_backoff is None and row.started_at == T0 + 30.5
    s = step(s, ev.WorkerReady(ts=T0 + 30.6, slot=0, generation=2, ident="devserve-g2-w0b"))
    row = only_worker(s)
    assert (row.state, row.restarts_used) == ("ready", 1)
    assert s.error is not None  # a crash recovery is not a good reload: the error stays

    # -- the next good reload (same generation number as the failed one) ----------------
    s = step(s, ev.ReloadStarted(ts=T0 + 40.0, generation=3, strategy="reimport"))
    assert s.reloads[-1].trigger == () and s.reloads[-1].requested_at is None  # manual
    s = step(s, ev.GenerationStarted(ts=T0 + 40.0, generation=3, workers=1))
    s = step(s, ev.WorkerSpawned(ts=T0 + 40.01, slot=0, generation=3, ident="devserve-g3-w0"))
    new_row = s.workers[-1]
    assert (new_row.generation, new_row.restarts_used) == (3, 1)  # carried to the new row
    s = step(s, ev.WorkerReady(ts=T0 + 40.02, slot=0, generation=3, ident="devserve-g3-w0"))
    s = step(s, ev.GenerationPromoted(ts=T0 + 40.03, generation=3, workers=1, mode="thread"))
    s = step(s, ev.WorkerDraining(ts=T0 + 40.03, slot=0, generation=2))
    s = step(s, ev.WorkerStopped(ts=T0 + 40.04, slot=0, generation=2))
    assert s.error is not None  # not cleared before the reload completed
    s = step(s, ev.ReloadCompleted(ts=T0 + 40.05, generation=3, strategy="reimport",
                                   phases={"import": 0.01, "ready": 0.02, "drained": 0.05}))
    # The failed generation-3 row keeps its outcome; only the newest gen-3 row becomes ok.
    assert [(r.generation, r.outcome) for r in s.reloads] == [(2, "ok"), (3, "failed"),
                                                              (3, "ok")]
    assert s.error is None  # cleared by the good reload
    row = only_worker(s)
    assert (row.generation, row.state, row.restarts_used, row.next_backoff) == (3, "ready", 0,
                                                                                None)

    # -- a slot that keeps crashing exhausts its budget ---------------------------------
    for used in range(1, 6):
        s = step(s, ev.WorkerCrashed(ts=T0 + 50 + used, slot=0, generation=3,
                                     reason="exit code 3"))
        s = step(s, ev.WorkerRespawnScheduled(
            ts=T0 + 50 + used, slot=0, ident="devserve-g3-w0", reason="exit code 3",
            restarts_used=used, budget=5, window=60.0, backoff=0.5 * 2 ** (used - 1)))
        assert only_worker(s).restarts_used == used
        s = step(s, ev.WorkerSpawned(ts=T0 + 50.5 + used, slot=0, generation=3,
                                     ident=f"devserve-g3-w0-{used}"))
        assert only_worker(s).restarts_used == used
    s = step(s, ev.WorkerCrashed(ts=T0 + 57, slot=0, generation=3, reason="exit code 3"))
    s = step(s, ev.WorkerBudgetExhausted(ts=T0 + 57, slot=0, restarts_used=5, budget=5,
                                         reason="exit code 3", window=60.0))
    row = only_worker(s)
    assert (row.state, row.restarts_used, row.budget, row.next_backoff) == ("failed", 5, 5,
                                                                            None)
    assert s.error is not None
    assert s.error.message == "worker slot 0 failed: exit code 3"
    assert s.error.location is None and s.error.ts == T0 + 57

    # -- traffic: req/s over the last RATE_WINDOW seconds and the tail of requests ------
    n = model.MAX_REQUESTS + 8
    t_req = T0 + 100.0
    for i in range(n):
        s = step(s, ev.RequestCompleted(
            ts=t_req + i * 0.1, slot=0, generation=3, method="GET", path=f"/item/{i}",
            status=200 if i % 5 else 404, duration=0.002, client="127.0.0.1:5000"))
    assert s.total_requests == n
    assert len(s.requests) == model.MAX_REQUESTS  # only the tail is kept
    assert [r.path for r in s.requests] == [f"/item/{i}" for i in range(n - model.MAX_REQUESTS,
                                                                         n)]
    last = s.requests[-1]
    assert (last.method, last.status, last.duration, last.http_version) == ("GET", 200, 0.002,
                                                                            "1.1")
    assert s.requests[-5].status == 404
    now = t_req + (n - 1) * 0.1
    assert s.req_per_second(now) == pytest.approx(n / model.RATE_WINDOW)
    # 3 s later only the requests of the last 5 s count.
    later = now + 3.0
    recent = sum(1 for i in range(n) if later - (t_req + i * 0.1) <= model.RATE_WINDOW)
    assert s.req_per_second(later) == pytest.approx(recent / model.RATE_WINDOW)
    assert s.req_per_second(now + model.RATE_WINDOW + 10) == 0.0

    # -- worker gauges -----------------------------------------------------------------
    s = step(s, ev.WorkerStats(ts=t_req + 3, slot=0, generation=3, connections=4, in_flight=2,
                               requests=n))
    row = only_worker(s)
    assert (row.connections, row.in_flight, row.requests) == (4, 2, n)
    assert row.state == "failed"  # a gauge does not change the state

    # -- shutdown ------------------------------------------------------------------------
    s = step(s, ev.ServerStopping(ts=t_req + 5, reason="SIGTERM"))
    assert s.stopping == "SIGTERM"


def test_unknown_and_traffic_only_events_leave_snapshot_alone() -> None:
    s = reduce_all(Snapshot(), boot_events())
    for event in (ev.LogLine(level="info", message="hello"),
                  ev.GenerationStarted(generation=2, workers=1),
                  ev.GenerationRetired(generation=1)):
        assert reduce(s, event) is s


def test_reduce_all_equals_stepwise_replay() -> None:
    events = boot_events()
    stepwise = Snapshot()
    for e in events:
        stepwise = reduce(stepwise, e)
    assert reduce_all(Snapshot(), events) == stepwise
    assert stepwise.generation == 1 and only_worker(stepwise).state == "ready"


def test_failed_generation_rows_do_not_linger() -> None:
    """A generation that never became ready (lifespan failure) is discarded: its rows go."""
    s = reduce_all(Snapshot(), boot_events())
    s = reduce_all(s, [
        ev.ReloadStarted(generation=2, strategy="reimport"),
        ev.GenerationStarted(generation=2, workers=1),
        ev.WorkerSpawned(slot=0, generation=2, ident="devserve-g2-w0"),
        ev.WorkerStopped(slot=0, generation=2, forced=False),
        ev.ReloadFailed(generation=2, strategy="reimport", serving_generation=1,
                        error="lifespan startup failed: boom", traceback="RuntimeError: boom"),
    ])
    row = only_worker(s)
    assert (row.generation, row.state) == (1, "ready")
    assert s.generation == 1
    assert s.error is not None and s.error.location is None
    assert s.error.message == "lifespan startup failed: boom"


def test_budget_exhaustion_only_fails_that_slot() -> None:
    s = reduce_all(Snapshot(), [
        starting(),
        ev.WorkerSpawned(slot=0, generation=1, ident="pid 10"),
        ev.WorkerSpawned(slot=1, generation=1, ident="pid 11"),
        ev.WorkerReady(slot=0, generation=1, ident="pid 10"),
        ev.WorkerReady(slot=1, generation=1, ident="pid 11"),
        ev.GenerationPromoted(generation=1, workers=2, mode="process"),
        ev.WorkerCrashed(slot=1, generation=1, reason="exit code 1"),
        ev.WorkerRespawnScheduled(slot=1, ident="pid 11", reason="exit code 1",
                                  restarts_used=1, budget=3, window=60.0, backoff=0.5),
    ])
    assert [(w.slot, w.state, w.restarts_used, w.budget) for w in s.workers] == [
        (0, "ready", 0, 5), (1, "crashed", 1, 3)]
    s = reduce(s, ev.WorkerBudgetExhausted(slot=1, restarts_used=3, budget=3,
                                           reason="exit code 1"))
    assert [(w.slot, w.state, w.restarts_used) for w in s.workers] == [
        (0, "ready", 0), (1, "failed", 3)]
    assert s.error is not None and "slot 1" in s.error.message


def test_restart_strategy_reload_row() -> None:
    """``R`` (stop-then-start): the old generation is retired before the new one starts."""
    s = reduce_all(Snapshot(), boot_events())
    s = reduce_all(s, [
        ev.ReloadStarted(generation=2, strategy="restart"),
        ev.WorkerDraining(slot=0, generation=1),
        ev.WorkerStopped(slot=0, generation=1),
    ])
    # Generation 1 is still the current one, so its stopped row stays visible.
    assert [(w.generation, w.state) for w in s.workers] == [(1, "stopped")]
    s = reduce_all(s, [
        ev.GenerationRetired(generation=1),
        ev.GenerationStarted(generation=2, workers=1),
        ev.WorkerSpawned(slot=0, generation=2, ident="devserve-g2-w0"),
        ev.WorkerReady(slot=0, generation=2, ident="devserve-g2-w0"),
        ev.GenerationPromoted(generation=2, workers=1, mode="thread"),
        ev.ReloadCompleted(generation=2, strategy="restart", phases={"total": 0.3}),
    ])
    row = only_worker(s)
    assert (row.generation, row.state) == (2, "ready")
    assert (s.reloads[-1].strategy, s.reloads[-1].outcome) == ("restart", "ok")
    assert dict(s.reloads[-1].phases) == {"total": 0.3}


def test_an_escalated_reload_is_one_row_with_the_strategy_it_took() -> None:
    """A Django model edit starts as a re-import and escalates to a fresh process: one row,
    which shows ``process`` and the failure when the fresh process rejects the edit."""
    s = reduce_all(Snapshot(), boot_events())
    s = reduce_all(s, [
        ev.ReloadRequested(trigger=("polls/models.py",), strategy="reimport"),
        ev.ReloadStarted(generation=2, strategy="reimport"),
        ev.ReloadStarted(generation=2, strategy="process"),
        ev.ReloadFailed(generation=2, strategy="process", error="SyntaxError: bad",
                        location="polls/models.py:3", serving_generation=1),
    ])
    assert [(r.generation, r.strategy, r.outcome, r.trigger) for r in s.reloads] == [
        (2, "process", "failed", ("polls/models.py",))]


def test_reload_history_is_bounded() -> None:
    s = reduce_all(Snapshot(), boot_events())
    for gen in range(2, 2 + model.MAX_RELOADS + 3):
        s = reduce_all(s, [
            ev.ReloadStarted(generation=gen, strategy="reimport"),
            ev.ReloadCompleted(generation=gen, strategy="reimport", phases={"total": 0.1}),
        ])
    assert len(s.reloads) == model.MAX_RELOADS
    assert s.reloads[-1].generation == 2 + model.MAX_RELOADS + 2
    assert all(r.outcome == "ok" for r in s.reloads)


def test_request_times_are_pruned_but_rate_stays_right() -> None:
    s = Snapshot()
    for i in range(100):  # 10 s of traffic at 10 req/s
        s = reduce(s, ev.RequestCompleted(ts=T0 + i * 0.1, slot=0, generation=1, method="GET",
                                          path="/", status=200, duration=0.001))
    s = reduce(s, ev.RequestCompleted(ts=T0 + 11.0, slot=0, generation=1, method="GET",
                                      path="/", status=200, duration=0.001))
    assert s.total_requests == 101
    assert all(T0 + 11.0 - t <= model.RATE_WINDOW for t in s.request_times)
    expected = sum(1 for i in range(100) if T0 + 11.0 - (T0 + i * 0.1) <= model.RATE_WINDOW) + 1
    assert s.req_per_second(T0 + 11.0) == pytest.approx(expected / model.RATE_WINDOW)


def test_clear_error_keeps_everything_else() -> None:
    s = reduce_all(Snapshot(), boot_events())
    s = reduce_all(s, [
        ev.ReloadStarted(generation=2, strategy="reimport"),
        ev.ReloadFailed(generation=2, strategy="reimport", error="boom", location="a.py:1"),
    ])
    cleared = model.clear_error(s)
    assert cleared.error is None
    assert dataclasses.replace(cleared, error=s.error) == s
