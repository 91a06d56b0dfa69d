"""Non-TTY output: ``describe()`` lines for every notable event, the JSON-lines sink, and when
the dashboard is wanted at all (``tui_wanted``), with a real pseudo-terminal for the TTY case."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
from pathlib import Path

import pytest

from devserve import lifecycle as ev
from devserve.config import Config
from devserve.display import tui_wanted
from devserve.display.plain import JsonLog, PlainLog, describe

INFO, WARNING, ERROR = logging.INFO, logging.WARNING, logging.ERROR


def starting(urls: tuple[str, ...] = ("http://127.0.0.1:8000",), workers: int = 1
             ) -> ev.ServerStarting:
    return ev.ServerStarting(app="app:app", urls=urls, mode="process",
                             mode_reason="the GIL is enabled, so processes give parallelism",
                             workers=workers, pid=77, gil_enabled=True, python="3.11.7")


# -- describe --------------------------------------------------------------------------------
@pytest.mark.parametrize(("event", "expected"), [
    (starting(), (INFO, "Listening on http://127.0.0.1:8000 (Press CTRL+C to quit)\n"
                        "Worker mode: process, 1 worker (the GIL is enabled, so processes give "
                        "parallelism)")),
    (starting(("http://127.0.0.1:8000", "http://[::1]:8000"), workers=4),
     (INFO, "Listening on http://127.0.0.1:8000 (Press CTRL+C to quit)\n"
            "Listening on http://[::1]:8000 (Press CTRL+C to quit)\n"
            "Worker mode: process, 4 workers (the GIL is enabled, so processes give "
            "parallelism)")),
    (ev.GenerationPromoted(generation=1, workers=1, mode="thread"),
     (INFO, "Serving generation 1 with 1 thread worker")),
    (ev.GenerationPromoted(generation=3, workers=4, mode="process"),
     (INFO, "Serving generation 3 with 4 process workers")),
    (ev.ReloadRequested(trigger=("app.py",)), (INFO, "Change detected in app.py: reloading")),
    (ev.ReloadRequested(trigger=("a.py", "b.py", "c.py", "d.py", "e.py")),
     (INFO, "Change detected in a.py, b.py, c.py (+2 more): reloading")),
    (ev.ReloadRequested(), (INFO, "Change detected in files: reloading")),
    (ev.ReloadCompleted(generation=2, strategy="partial",
                        phases={"import": 0.01, "ready": 0.0455, "drained": 0.3456,
                                "total": 0.3456}, modules=3),
     (INFO, "Reloaded: generation 2 ready in 46 ms (partial, 3 modules re-executed), "
            "previous drained in 300 ms")),
    (ev.ReloadCompleted(generation=2, strategy="wider", modules=1, reason="shop.db owns Base",
                        phases={"ready": 0.01, "drained": 0.02, "total": 0.02}),
     (INFO, "Reloaded: generation 2 ready in 10 ms (wider, 1 module re-executed), previous "
            "drained in 10 ms; shop.db owns Base")),
    (ev.ReloadCompleted(generation=2, strategy="template-only", phases={"total": 0.0031}),
     (INFO, "Refreshed without a new generation (template-only) in 3 ms")),
    (ev.ReloadCompleted(generation=3, strategy="restart", phases={"total": 0.2504}),
     (INFO, "Restarted: generation 3 in 250 ms")),
    (ev.ReloadFailed(generation=3, strategy="reimport", serving_generation=2,
                     error="error while importing 'app': SyntaxError: invalid syntax "
                           "(/p/app.py:7)"),
     (ERROR, "Reload failed, generation 2 keeps serving: error while importing 'app': "
             "SyntaxError: invalid syntax (/p/app.py:7)")),
    (ev.ReloadFailed(generation=3, strategy="reimport", serving_generation=2, error="boom",
                     location="/p/app.py:7",
                     traceback='  File "/p/app.py", line 7\nSyntaxError: invalid syntax\n'),
     (ERROR, 'Reload failed, generation 2 keeps serving: boom\n  File "/p/app.py", line 7\n'
             "SyntaxError: invalid syntax")),
    (ev.WorkerRespawnScheduled(slot=1, ident="pid 4321", reason="exit code 1",
                               restarts_used=2, budget=5, window=60.0, backoff=1.0),
     (WARNING, "Worker 1 (pid 4321) died: exit code 1; respawning in 1.0s (2/5 restarts)")),
    (ev.WorkerBudgetExhausted(slot=0, restarts_used=5, budget=5, reason="exit code 3"),
     (ERROR, "Worker 0 exhausted its restart budget (5 in 60s); slot failed: exit code 3")),
    (ev.ServerStopping(reason="SIGTERM"), (INFO, "Shutting down (SIGTERM)")),
    (ev.ServerStopping(reason="Every worker slot exhausted its restart budget", error=True),
     (ERROR, "Every worker slot exhausted its restart budget")),
    (ev.LogLine(level="info", message="errors cleared"), (INFO, "errors cleared")),
], ids=lambda v: v.kind if isinstance(v, ev.Event) else "")
def test_describe_notable_events(event: ev.Event, expected: tuple[int, str]) -> None:
    assert describe(event) == expected


@pytest.mark.parametrize("event", [
    ev.RequestCompleted(slot=0, generation=1, method="GET", path="/", status=200,
                        duration=0.001),
    ev.WorkerStats(slot=0, generation=1, connections=1, in_flight=0, requests=3),
    ev.WorkerSpawned(slot=0, generation=1, ident="pid 1"),
    ev.WorkerReady(slot=0, generation=1, ident="pid 1"),
    ev.WorkerDraining(slot=0, generation=1),
    ev.WorkerStopped(slot=0, generation=1),
    ev.GenerationStarted(generation=2, workers=1),
    ev.GenerationRetired(generation=1),
    ev.ReloadStarted(generation=2, strategy="reimport"),
], ids=lambda e: e.kind)
def test_describe_is_silent_for_traffic_and_internal_steps(event: ev.Event) -> None:
    assert describe(event) is None


def test_plain_log_writes_described_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="devserve.error")
    sink = PlainLog()
    sink.emit(ev.GenerationPromoted(generation=2, workers=1, mode="thread"))
    sink.emit(ev.RequestCompleted(slot=0, generation=2, method="GET", path="/", status=200,
                                  duration=0.001))
    sink.emit(ev.WorkerBudgetExhausted(slot=0, restarts_used=5, budget=5, reason="exit 3"))
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert records == [
        ("devserve.error", INFO, "Serving generation 2 with 1 thread worker"),
        ("devserve.error", ERROR,
         "Worker 0 exhausted its restart budget (5 in 60s); slot failed: exit 3"),
    ]


# -- JSON lines ------------------------------------------------------------------------------
ALL_EVENTS: list[ev.Event] = [
    starting(),
    ev.GenerationStarted(generation=1, workers=1),
    ev.WorkerSpawned(slot=0, generation=1, ident="pid 5"),
    ev.WorkerReady(slot=0, generation=1, ident="pid 5"),
    ev.GenerationPromoted(generation=1, workers=1, mode="process"),
    ev.ReloadRequested(trigger=("app.py",)),
    ev.ReloadStarted(generation=2, strategy="process-roll"),
    ev.ReloadCompleted(generation=2, strategy="process-roll", phases={"ready": 0.1}),
    ev.ReloadFailed(generation=3, strategy="process-roll", error="boom\nline 2",
                    traceback='File "x.py"\n  "quoted"\tTab'),
    ev.WorkerCrashed(slot=0, generation=2, reason="exit code 1"),
    ev.WorkerRespawnScheduled(slot=0, ident="pid 5", reason="exit code 1", restarts_used=1,
                              budget=5, window=60.0, backoff=0.5),
    ev.WorkerBudgetExhausted(slot=0, restarts_used=5, budget=5, reason="x"),
    ev.RequestCompleted(slot=0, generation=2, method="GET", path="/ü?x=\"1\"", status=200,
                        duration=0.001, client="127.0.0.1:5555"),
    ev.WorkerStats(slot=0, generation=2, connections=1, in_flight=0, requests=1),
    ev.LogLine(level="info", message="hello"),
    ev.ServerStopping(reason="SIGTERM"),
]


def test_json_log_one_object_per_line() -> None:
    stream = io.StringIO()
    sink = JsonLog(stream)
    for event in ALL_EVENTS:
        sink.emit(event)
    text = stream.getvalue()
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert len(lines) == len(ALL_EVENTS)
    for line, event in zip(lines, ALL_EVENTS, strict=True):
        data = json.loads(line)
        assert isinstance(data, dict)
        assert data["event"] == event.kind
        assert data["ts"] == event.ts
    parsed = [json.loads(line) for line in lines]
    assert parsed[0]["urls"] == ["http://127.0.0.1:8000"] and parsed[0]["pid"] == 77
    assert parsed[7]["phases"] == {"ready": 0.1}
    assert parsed[8]["traceback"] == 'File "x.py"\n  "quoted"\tTab'
    assert parsed[12]["path"] == "/ü?x=\"1\"" and parsed[12]["status"] == 200


def test_json_log_lines_stay_whole_under_concurrent_emitters() -> None:
    stream = io.StringIO()
    sink = JsonLog(stream)
    per_thread, threads = 300, 8

    def emit(n: int) -> None:
        for i in range(per_thread):
            sink.emit(ev.RequestCompleted(slot=n, generation=1, method="GET", path=f"/{i}",
                                          status=200, duration=0.0))

    workers = [threading.Thread(target=emit, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(30)
    lines = stream.getvalue().splitlines()
    assert len(lines) == per_thread * threads
    seen = {(d["slot"], d["path"]) for d in map(json.loads, lines)}
    assert len(seen) == per_thread * threads


# -- tui_wanted ------------------------------------------------------------------------------
def test_tui_on_and_off_ignore_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert tui_wanted(Config(tui="on")) is True
    assert tui_wanted(Config(tui="off")) is False


def test_tui_auto_with_non_tty_stdout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert tui_wanted(Config(tui="auto")) is False
    with (tmp_path / "out.log").open("w") as fh:  # redirected to a file
        monkeypatch.setattr(sys, "stdout", fh)
        assert tui_wanted(Config(tui="auto")) is False
    read_fd, write_fd = os.pipe()  # piped into another program
    with os.fdopen(write_fd, "w") as pipe:
        monkeypatch.setattr(sys, "stdout", pipe)
        assert tui_wanted(Config(tui="auto")) is False
    os.close(read_fd)


@pytest.mark.parametrize(("term", "expected"), [("xterm-256color", True), ("dumb", False),
                                                (None, False)])
def test_tui_auto_with_a_real_terminal(monkeypatch: pytest.MonkeyPatch, term: str | None,
                                       expected: bool) -> None:
    if term is None:
        monkeypatch.delenv("TERM", raising=False)
    else:
        monkeypatch.setenv("TERM", term)
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=True) as tty:
            assert tty.isatty()
            monkeypatch.setattr(sys, "stdout", tty)
            assert tui_wanted(Config(tui="auto")) is expected
    finally:
        os.close(master)
