"""The dashboard's pure renderables, rendered into a recording Console (no terminal, no colour)
and checked as text: what a developer reads on screen, at a fixed and stable width."""

from __future__ import annotations

import io
import re

import pytest
from rich.cells import cell_len
from rich.console import Console, RenderableType

from devserve import lifecycle as ev
from devserve.display import model, render
from devserve.display.model import Snapshot, reduce_all

WIDTH = 100
T0 = 500.0
URL = "http://127.0.0.1:8123"
LONG_TB = "\n".join([
    "Traceback (most recent call last):",
    '  File "/proj/app.py", line 12, in <module>',
    "    import helpers",
    '  File "/proj/helpers.py", line 3',
    "    def broken(:",
    "               ^",
    "SyntaxError: invalid syntax",
])


def console(width: int = WIDTH) -> Console:
    return Console(width=width, record=True, color_system=None, force_terminal=False,
                   file=io.StringIO(), legacy_windows=False)


def text_of(renderable: RenderableType, width: int = WIDTH) -> str:
    c = console(width)
    c.print(renderable)
    return c.export_text()


def lines_of(renderable: RenderableType, width: int = WIDTH) -> list[str]:
    return text_of(renderable, width).rstrip("\n").split("\n")


def row_with(lines: list[str], *needles: str) -> str:
    for line in lines:
        if all(n in line for n in needles):
            return line
    raise AssertionError(f"no line with {needles!r} in:\n" + "\n".join(lines))


def cells(line: str) -> list[str]:
    """The cells of a table row (box characters of either weight as separators)."""
    return [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]


def base_events() -> list[ev.Event]:
    return [
        ev.ServerStarting(ts=T0, app="app:app", urls=(URL,), mode="thread",
                          mode_reason="--reload with one worker re-imports in-process",
                          workers=2, pid=4242, gil_enabled=True, python="3.11.7"),
        ev.WorkerSpawned(ts=T0 + 1, slot=0, generation=1, ident="devserve-g1-w0"),
        ev.WorkerSpawned(ts=T0 + 1, slot=1, generation=1, ident="devserve-g1-w1"),
        ev.WorkerReady(ts=T0 + 1.1, slot=0, generation=1, ident="devserve-g1-w0"),
        ev.WorkerReady(ts=T0 + 1.1, slot=1, generation=1, ident="devserve-g1-w1"),
        ev.GenerationPromoted(ts=T0 + 1.2, generation=1, workers=2, mode="thread"),
    ]


@pytest.fixture
def busy() -> Snapshot:
    """Two slots: slot 0 reloaded to generation 2, slot 1 crashed once and waits to respawn;
    a good reload, a failed one with an error, some traffic."""
    return reduce_all(Snapshot(), [
        *base_events(),
        ev.ReloadRequested(ts=T0 + 10.0, trigger=("app.py", "models.py")),
        ev.ReloadStarted(ts=T0 + 10.042, generation=2, strategy="reimport"),
        ev.WorkerSpawned(ts=T0 + 10.1, slot=0, generation=2, ident="devserve-g2-w0"),
        ev.WorkerSpawned(ts=T0 + 10.1, slot=1, generation=2, ident="devserve-g2-w1"),
        ev.WorkerReady(ts=T0 + 10.2, slot=0, generation=2, ident="devserve-g2-w0"),
        ev.WorkerReady(ts=T0 + 10.2, slot=1, generation=2, ident="devserve-g2-w1"),
        ev.GenerationPromoted(ts=T0 + 10.2, generation=2, workers=2, mode="thread"),
        ev.WorkerDraining(ts=T0 + 10.2, slot=0, generation=1),
        ev.WorkerDraining(ts=T0 + 10.2, slot=1, generation=1),
        ev.WorkerStopped(ts=T0 + 10.4, slot=0, generation=1),
        ev.WorkerStopped(ts=T0 + 10.4, slot=1, generation=1),
        ev.ReloadCompleted(ts=T0 + 10.4, generation=2, strategy="reimport",
                           phases={"import": 0.0123, "ready": 0.0456, "drained": 0.3001,
                                   "total": 0.3001}),
        ev.ReloadRequested(ts=T0 + 20.0, trigger=("helpers.py",)),
        ev.ReloadStarted(ts=T0 + 20.007, generation=3, strategy="reimport"),
        ev.ReloadFailed(ts=T0 + 20.02, generation=3, strategy="reimport",
                        error="error while importing 'app': SyntaxError: invalid syntax "
                              "(/proj/helpers.py:3)",
                        serving_generation=2, location="/proj/helpers.py:3",
                        traceback=LONG_TB),
        ev.WorkerCrashed(ts=T0 + 30.0, slot=1, generation=2, reason="exit code 1"),
        ev.WorkerRespawnScheduled(ts=T0 + 30.0, slot=1, ident="devserve-g2-w1",
                                  reason="exit code 1", restarts_used=1, budget=5,
                                  window=60.0, backoff=0.5),
        ev.WorkerStats(ts=T0 + 31, slot=0, generation=2, connections=3, in_flight=1,
                       requests=1234),
        *[ev.RequestCompleted(ts=T0 + 38.0 + i * 0.1, slot=0, generation=2, method="GET",
                              path=f"/items/{i}", status=200, duration=0.0042)
          for i in range(9)],
        ev.RequestCompleted(ts=T0 + 39.0, slot=0, generation=2, method="POST", path="/orders",
                            status=201, duration=0.0153),
        ev.RequestCompleted(ts=T0 + 39.1, slot=0, generation=2, method="GET",
                            path="/missing", status=404, duration=0.0008),
        ev.RequestCompleted(ts=T0 + 39.2, slot=0, generation=2, method="GET", path="/boom",
                            status=500, duration=0.1234),
    ])


NOW = T0 + 40.0


# -- workers ---------------------------------------------------------------------------------
def test_workers_table_rows(busy: Snapshot) -> None:
    lines = lines_of(render.workers_table(busy, NOW))
    assert lines[0].strip() == "workers"
    header = cells(row_with(lines, "slot", "gen", "state"))
    assert header == ["slot", "gen", "worker", "state", "conns", "in-flight", "served",
                      "restarts", "uptime"]
    slot0 = cells(row_with(lines, "devserve-g2-w0"))
    assert slot0 == ["0", "2", "devserve-g2-w0", "ready", "3", "1", "1234", "0/5", "29s"]
    slot1 = cells(row_with(lines, "devserve-g2-w1"))
    assert slot1[:4] == ["1", "2", "devserve-g2-w1", "crashed"]
    assert slot1[7] == "1/5 (next in 0.5s)"
    # Retired generation-1 rows are gone.
    assert not any("devserve-g1-" in line for line in lines)


@pytest.mark.parametrize("state", ["starting", "ready", "draining", "stopped", "crashed",
                                   "failed"])
def test_workers_table_state_words(state: str) -> None:
    s = Snapshot(workers=(model.WorkerRow(slot=3, generation=7, ident="pid 99", state=state,
                                          restarts_used=1, budget=5, next_backoff=2.0,
                                          started_at=NOW - 3725),),
                 generation=7)
    row = cells(row_with(lines_of(render.workers_table(s, NOW)), "pid 99"))
    assert row[:4] == ["3", "7", "pid 99", state]
    # The backoff hint is only shown while the slot waits to respawn.
    assert row[7] == ("1/5 (next in 2.0s)" if state == "crashed" else "1/5")
    assert row[8] == "1h02m"


def test_workers_table_budget_exhausted() -> None:
    s = reduce_all(Snapshot(), [
        *base_events(),
        ev.WorkerCrashed(ts=T0 + 5, slot=0, generation=1, reason="exit code 3"),
        ev.WorkerBudgetExhausted(ts=T0 + 5, slot=0, restarts_used=5, budget=5,
                                 reason="exit code 3"),
    ])
    row = cells(row_with(lines_of(render.workers_table(s, NOW)), "devserve-g1-w0"))
    assert (row[3], row[7]) == ("failed", "5/5")


# -- error panel -----------------------------------------------------------------------------
def test_error_panel(busy: Snapshot) -> None:
    panel = render.error_panel(busy)
    assert panel is not None
    lines = lines_of(panel)
    assert "error (kept serving the previous generation)" in lines[0]
    body = "\n".join(line.strip("│ ") for line in lines)
    assert "error while importing 'app': SyntaxError: invalid syntax (/proj/helpers.py:3)" in body
    assert "at /proj/helpers.py:3" in body
    for tb_line in LONG_TB.splitlines():
        assert tb_line.strip() in body
    # The traceback keeps its indentation (the caret still points at the column).
    caret = row_with(lines, "^")
    code = row_with(lines, "def broken(:")
    assert caret.index("^") == code.index(":")
    assert all(cell_len(line) == WIDTH for line in lines)


def test_no_error_no_panel(busy: Snapshot) -> None:
    assert render.error_panel(model.clear_error(busy)) is None


def test_error_panel_without_location_or_traceback() -> None:
    s = Snapshot(error=model.ErrorInfo("worker slot 0 failed: exit code 3"))
    lines = lines_of(render.error_panel(s))  # type: ignore[arg-type]
    body = "\n".join(lines)
    assert "worker slot 0 failed: exit code 3" in body
    assert " at " not in body
    assert len(lines) == 3  # top border, the message, bottom border


# -- reload history --------------------------------------------------------------------------
def test_reloads_table(busy: Snapshot) -> None:
    lines = lines_of(render.reloads_table(busy))
    assert lines[0].strip() == "reloads"
    header = cells(row_with(lines, "gen", "trigger"))
    assert header == ["gen", "trigger", "strategy", "detect→import→ready→drained", "outcome"]
    failed = row_with(lines, "helpers.py")
    ok = row_with(lines, "app.py, models.py")
    assert lines.index(failed) < lines.index(ok)  # newest first
    assert cells(failed) == ["3", "helpers.py", "reimport", "7 → - → - → - ms", "failed"]
    assert cells(ok) == ["2", "app.py, models.py", "reimport", "42 → 12 → 46 → 300 ms", "ok"]


def test_reloads_table_manual_restart_and_running() -> None:
    s = reduce_all(Snapshot(), [
        *base_events(),
        ev.ReloadStarted(ts=T0 + 5, generation=2, strategy="restart"),
        ev.ReloadCompleted(ts=T0 + 5.3, generation=2, strategy="restart",
                           phases={"total": 0.2507}),
        ev.ReloadStarted(ts=T0 + 9, generation=3, strategy="process-roll"),
    ])
    lines = lines_of(render.reloads_table(s))
    assert cells(row_with(lines, "restart")) == ["2", "manual", "restart",
                                                "- → - → - → 251 ms", "ok"]
    assert cells(row_with(lines, "process-roll")) == ["3", "manual", "process-roll",
                                                     "- → - → - → - ms", "running"]


def test_reloads_table_shows_strategy_modules_and_escalation_reason() -> None:
    s = reduce_all(Snapshot(), [
        *base_events(),
        ev.ReloadStarted(ts=T0 + 5, generation=2, strategy="reimport"),
        ev.ReloadCompleted(ts=T0 + 5.01, generation=2, strategy="partial", modules=3,
                           phases={"ready": 0.01, "drained": 0.01, "total": 0.01}),
        ev.ReloadStarted(ts=T0 + 6, generation=3, strategy="reimport"),
        ev.ReloadCompleted(ts=T0 + 6.02, generation=3, strategy="wider", modules=5,
                           reason="shop.db owns Base",
                           phases={"ready": 0.02, "drained": 0.02, "total": 0.02}),
        ev.ReloadStarted(ts=T0 + 7, generation=3, strategy="template-only"),
        ev.ReloadCompleted(ts=T0 + 7.001, generation=3, strategy="template-only",
                           phases={"total": 0.001}),
    ])
    lines = lines_of(render.reloads_table(s))
    assert cells(row_with(lines, "partial"))[2] == "partial · 3 modules"
    wider = row_with(lines, "wider")
    assert cells(wider)[2] == "wider · 5 modules"
    assert "shop.db owns Base" in lines[lines.index(wider) + 1]
    assert cells(row_with(lines, "template-only"))[0] == "3"
    # the template refresh got its own row; generation 3's reload row kept its outcome
    assert [r.strategy for r in s.reloads][-2:] == ["wider", "template-only"]


# -- requests --------------------------------------------------------------------------------
def test_requests_panel(busy: Snapshot) -> None:
    lines = lines_of(render.requests_panel(busy, NOW))
    assert lines[0].strip() == "requests · 2.4 req/s · 12 total"
    assert cells(row_with(lines, "/orders")) == ["POST", "/orders", "201", "15.3 ms"]
    assert cells(row_with(lines, "/missing")) == ["GET", "/missing", "404", "0.8 ms"]
    assert cells(row_with(lines, "/boom")) == ["GET", "/boom", "500", "123.4 ms"]
    paths = [cells(line)[1] for line in lines if "/" in line and "req/s" not in line]
    assert paths == [f"/items/{i}" for i in range(9)] + ["/orders", "/missing", "/boom"]
    # Once the traffic stops, the rate decays to zero but the history stays.
    later = render.requests_panel(busy, NOW + 60)
    assert lines_of(later)[0].strip() == "requests · 0.0 req/s · 12 total"


def test_requests_panel_long_path_is_cut_not_wrapped(busy: Snapshot) -> None:
    long = "/" + "very-long-segment/" * 20
    s = reduce_all(busy, [ev.RequestCompleted(ts=NOW, slot=0, generation=2, method="GET",
                                              path=long, status=200, duration=0.001)])
    lines = lines_of(render.requests_panel(s, NOW))
    row = row_with(lines, "/very-long-segment/")
    assert "…" in row and cells(row)[2:] == ["200", "1.0 ms"]
    assert all(cell_len(line) <= WIDTH for line in lines)
    assert len(lines) == len(lines_of(render.requests_panel(busy, NOW)))  # still one row each


# -- whole dashboard -------------------------------------------------------------------------
def test_header(busy: Snapshot) -> None:
    text = text_of(render.header(busy, NOW), width=200)
    # The serving generation is on the first line, so it never wraps or scrolls away.
    assert "devserve app:app · generation 2  http://127.0.0.1:8123" in text
    assert ("thread mode (--reload with one worker re-imports in-process) · GIL on · "
            "Python 3.11.7 · pid 4242 · up 40s") in text
    stopping = reduce_all(busy, [ev.ServerStopping(reason="SIGINT")])
    assert "stopping: SIGINT" in text_of(render.header(stopping, NOW), width=200)


def test_dashboard_sections(busy: Snapshot) -> None:
    text = text_of(render.dashboard(busy, NOW))
    order = ["devserve app:app", "workers", "reloads", "error (kept serving",
             "requests · ", "r reload · R restart · c clear error · l request log · q quit"]
    positions = [text.index(part) for part in order]
    assert positions == sorted(positions)
    hidden = text_of(render.dashboard(busy, NOW, show_requests=False, keys=False))
    assert "requests · " not in hidden and "/orders" not in hidden
    assert "q quit" not in hidden
    assert "workers" in hidden and "reloads" in hidden


def test_dashboard_before_any_event() -> None:
    text = text_of(render.dashboard(Snapshot(), NOW))
    assert "devserve ?" in text and "generation 0" in text
    assert "reloads" not in text and "error (" not in text


@pytest.mark.parametrize("width", [WIDTH, 80, 120])
def test_dashboard_width_is_stable(busy: Snapshot, width: int) -> None:
    """Every frame is exactly the console width, whatever the content, so successive frames
    of the live view overwrite each other cleanly."""
    frames = [
        render.dashboard(Snapshot(), NOW),
        render.dashboard(busy, NOW),
        render.dashboard(busy, NOW + 7200, show_requests=False),
        render.dashboard(model.clear_error(busy), NOW),
    ]
    for frame in frames:
        lines = lines_of(frame, width)
        assert lines[0].startswith("╭") and lines[-1].startswith("╰")
        assert {cell_len(line) for line in lines} == {width}, "\n".join(lines)
        assert all(line[0] in "╭│╰" for line in lines)


def test_table_columns_do_not_move_between_frames() -> None:
    """Counters growing and uptimes ticking (the values that change on every refresh) keep
    the workers table's column layout: no jitter from one frame to the next."""

    def row(served: int, conns: int, in_flight: int, age: float) -> model.WorkerRow:
        return model.WorkerRow(slot=0, generation=2, ident="devserve-g2-w0", state="ready",
                               connections=conns, in_flight=in_flight, requests=served,
                               started_at=NOW - age)

    def separators(r: model.WorkerRow) -> list[int]:
        s = Snapshot(generation=2, workers=(r,))
        line = row_with(lines_of(render.workers_table(s, NOW)), "devserve-g2-w0")
        return [i for i, ch in enumerate(line) if ch == "│"]

    first = separators(row(0, 0, 0, 0))
    for served, conns, in_flight, age in [(9, 1, 1, 9), (10, 10, 9, 59), (999, 99, 64, 60),
                                          (99_999, 500, 100, 3599), (999_999, 9999, 999, 7200)]:
        assert separators(row(served, conns, in_flight, age)) == first
