"""Client side of the supervisor tests (not an app): bounded keep-alive load from real clients.

``KeepAliveLoad`` runs *clients* threads, each with its own ``httpx.Client`` (one keep-alive
connection per thread, or a new connection per request with ``fresh_connections``; one request
in flight per thread), sending ``GET path`` back to back until
``stop()`` or until its own deadline passes, so a failing test never leaves load running.
Every request becomes one :class:`Outcome`; tests assert on them and can wait (with a deadline)
for outcomes that match a predicate instead of sleeping.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Outcome:
    client: int
    started: float  # time.monotonic() when the request was sent
    finished: float
    status: int | None  # None: the request failed with an exception
    version: str = ""  # x-version header (the app's code version)
    worker: str = ""  # x-worker header: "<process name>/<thread name>"
    pid: str = ""
    error: str = ""  # exception type and text when status is None
    retry_after: str | None = None
    connection: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


class KeepAliveLoad:
    """*clients* keep-alive clients hammering *url* until stopped (or *max_seconds* passed)."""

    def __init__(self, url: str, *, clients: int = 20, path: str = "/",
                 max_seconds: float = 60.0, timeout: float = 10.0,
                 stop_after_503: bool = False, fresh_connections: bool = False) -> None:
        self.url = url.rstrip("/") + path
        self.clients = clients
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.stop_after_503 = stop_after_503
        # Ask for "Connection: close": every request then comes on a new connection.
        self.headers = {"connection": "close"} if fresh_connections else {}
        self.outcomes: list[Outcome] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> KeepAliveLoad:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        for i in range(self.clients):
            t = threading.Thread(target=self._run, args=(i, deadline), daemon=True,
                                 name=f"load-{i}")
            self._threads.append(t)
            t.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"load clients did not stop: {alive}"

    def _record(self, outcome: Outcome) -> None:
        with self._cond:
            self.outcomes.append(outcome)
            self._cond.notify_all()

    def _run(self, index: int, deadline: float) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(timeout=self.timeout, limits=limits) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    r = client.get(self.url, headers=self.headers)
                except httpx.HTTPError as exc:
                    self._record(Outcome(index, started, time.monotonic(), None,
                                         error=f"{type(exc).__name__}: {exc}"))
                    continue
                h = r.headers
                self._record(Outcome(
                    index, started, time.monotonic(), r.status_code,
                    version=h.get("x-version", ""), worker=h.get("x-worker", ""),
                    pid=h.get("x-pid", ""), retry_after=h.get("retry-after"),
                    connection=h.get("connection"),
                ))
                if self.stop_after_503 and r.status_code == 503:
                    return

    # -- reading the results ------------------------------------------------------------
    def snapshot(self) -> list[Outcome]:
        with self._cond:
            return list(self.outcomes)

    def wait_for(self, predicate: Callable[[Outcome], bool], count: int = 1,
                 timeout: float = 15.0, what: str = "matching responses") -> list[Outcome]:
        """Block until *count* outcomes satisfy *predicate*; fail the test on timeout."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [o for o in self.outcomes if predicate(o)]
                if len(found) >= count:
                    return found
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{count} x {what} not seen within {timeout}s "
                        f"(got {len(found)} of {len(self.outcomes)} outcomes)"
                    )
                self._cond.wait(min(remaining, 0.2))

    def failures(self) -> list[Outcome]:
        return [o for o in self.snapshot() if not o.ok]


def longest_gap(outcomes: list[Outcome], start: float, end: float) -> float:
    """Longest interval within [start, end] with no successful response finishing."""
    times = sorted(o.finished for o in outcomes if o.ok and start <= o.finished <= end)
    points = [start, *times, end]
    return max(b - a for a, b in itertools.pairwise(points))
