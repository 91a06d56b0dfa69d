"""QuietCollector: the retired generation is collected once requests pause, not while they run,
and a reload that finds a collection pending runs it first. Real threads, a real gc; the
activity source is a plain counter the test drives like a worker would."""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref
from collections.abc import Iterator

import pytest

from devserve.supervision import collect
from devserve.supervision.collect import QuietCollector
from tests.conftest import wait_until


class Node:
    """A cycle that only a collection frees (like a retired generation's modules)."""

    def __init__(self) -> None:
        self.me = self


class Traffic:
    """(in flight, started so far), as the serving workers report it."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.started = 0

    def __call__(self) -> tuple[int, int]:
        return self.in_flight, self.started


def retired_garbage() -> weakref.ref[Node]:
    node = Node()
    ref = weakref.ref(node)
    del node
    return ref


@pytest.fixture(autouse=True)
def _thawed_heap() -> Iterator[None]:
    """The collector freezes what lives; leave later tests a normal heap."""
    yield
    gc.unfreeze()


def test_waits_while_requests_run_then_collects_once_quiet(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setattr(collect, "LATEST", 30.0)  # only quietness may trigger it here
    traffic = Traffic()
    traffic.in_flight = 1
    collector = QuietCollector(traffic, threading.Lock(), lambda: 2)
    ref = retired_garbage()
    collector.request()
    # Steady traffic: requests keep starting; nothing is collected meanwhile.
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        traffic.started += 1
        time.sleep(collect.POLL / 2)
        assert ref() is not None, "collected while requests were running"
    traffic.in_flight = 0
    wait_until(lambda: ref() is None, 10.0, what="collection once requests paused")


def test_collects_by_the_deadline_under_steady_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collect, "LATEST", 0.2)
    traffic = Traffic()
    traffic.in_flight = 1  # never quiet
    collector = QuietCollector(traffic, threading.Lock(), lambda: 2)
    ref = retired_garbage()
    collector.request()
    wait_until(lambda: ref() is None, 10.0, what="collection at the deadline")


def test_a_reload_runs_a_pending_collection_first(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(collect, "LATEST", 30.0)
    traffic = Traffic()
    traffic.in_flight = 1
    busy = threading.Lock()
    collector = QuietCollector(traffic, busy, lambda: 7)
    ref = retired_garbage()
    collector.request()
    with caplog.at_level(logging.DEBUG, logger="devserve.error"), busy:  # as a reload does
        collector.collect_pending()
        assert ref() is None
        collector.collect_pending()  # nothing pending any more: no second collection
    released = [r for r in caplog.records if "released the generations before 7" in r.message]
    assert len(released) == 1
