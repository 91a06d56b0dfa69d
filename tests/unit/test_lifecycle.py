"""The fan-out collector: every sink gets every event; a failing sink is logged once and never
stops the others (a display bug must neither take the server down nor vanish silently)."""

from __future__ import annotations

import logging

import pytest

from devserve.lifecycle import FanOutCollector, LogLine, RecordingCollector, ReloadStarted


class BrokenSink:
    def __init__(self) -> None:
        self.calls = 0

    def emit(self, event: object) -> None:
        self.calls += 1
        raise ValueError("display bug")


def test_a_failing_sink_is_logged_once_and_the_others_still_get_every_event(
        caplog: pytest.LogCaptureFixture) -> None:
    broken, before, after = BrokenSink(), RecordingCollector(), RecordingCollector()
    fan = FanOutCollector(before, broken)
    fan.add(after)
    events = [ReloadStarted(generation=2, strategy="reimport"),
              LogLine(level="info", message="x"), ReloadStarted(generation=3, strategy="restart")]
    with caplog.at_level(logging.ERROR, logger="devserve.error"):
        for event in events:
            fan.emit(event)
    assert before.events == events and after.events == events
    assert broken.calls == 3
    errors = [r for r in caplog.records if r.name == "devserve.error"]
    assert len(errors) == 1
    assert errors[0].getMessage() == (
        "BrokenSink failed on ReloadStarted; its later failures are not logged")
    assert errors[0].exc_info is not None and "display bug" in caplog.text


def test_each_failing_sink_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    fan = FanOutCollector(BrokenSink(), BrokenSink())
    with caplog.at_level(logging.ERROR, logger="devserve.error"):
        fan.emit(LogLine(level="info", message="a"))
        fan.emit(LogLine(level="info", message="b"))
    assert len(caplog.records) == 2
