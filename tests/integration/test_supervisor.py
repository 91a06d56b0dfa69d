"""The Supervisor with real workers: several workers serving, crashes and the per-slot restart
budget, ``--limit-max-requests`` retirement, and (in-process) concurrent reloads/restarts and
the lifecycle events of a reload.

Crashes are real: ``kill -9`` of a worker process, or a ``SystemExit`` raised from a callback on
the worker's event loop (``tests/apps/sup_crash.py``, ``/crash`` of ``tests/apps/sup_app.py``).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from apps import sup_app
from apps.sup_load import KeepAliveLoad, Outcome, longest_gap
from conftest import APPS, ServerFactory, ServerProcess, descendants, wait_until

from devserve.config import load_config
from devserve.lifecycle import (
    Event,
    GenerationPromoted,
    GenerationRetired,
    GenerationStarted,
    RecordingCollector,
    ReloadCompleted,
    ReloadFailed,
    ReloadStarted,
    WorkerDraining,
    WorkerReady,
    WorkerStopped,
)
from devserve.net.sockets import bind_socket
from devserve.reload.importer import ProjectImporter, ReloadOutcome
from devserve.supervisor import Supervisor

MODES = ["thread", "process"]
WORKER_RE = re.compile(r"devserve-g(\d+)-w(\d+)")
DIED_RE = (r"Worker (\d+) \((.*?)\) died: (.*); respawning in ([\d.]+)s "
           r"\((\d+)/(\d+) restarts\)")


def slot_of(outcome: Outcome) -> int:
    m = WORKER_RE.search(outcome.worker)
    assert m, f"no worker identity in {outcome}"
    return int(m.group(2))


def _poll_fresh_until(url: str, predicate: Any, timeout: float) -> tuple[int, float]:
    """GET on a fresh connection until a response satisfies *predicate*; returns its x-pid and
    the time it arrived."""
    def matched() -> tuple[int, float] | None:
        try:
            r = httpx.get(url, timeout=2, headers={"connection": "close"})
            if r.status_code == 200 and predicate(r):
                return int(r.headers["x-pid"]), time.monotonic()
        except httpx.HTTPError:
            pass
        return None

    found = wait_until(matched, timeout, "a response matching the predicate", interval=0)
    assert found is not None
    return found


def lines_matching(server: ServerProcess, pattern: str) -> list[re.Match[str]]:
    regex = re.compile(pattern)
    return [m for m in (regex.search(line) for line in list(server.lines)) if m]


def wait_for_count(server: ServerProcess, pattern: str, count: int, timeout: float
                   ) -> list[re.Match[str]]:
    def logged() -> list[re.Match[str]]:
        found = lines_matching(server, pattern)
        return found if len(found) >= count else []

    return wait_until(logged, timeout, f"{count} x {pattern!r} logged", interval=0.05,
                      detail=lambda: server.output)


def start(start_server: ServerFactory, mode: str, *extra: str, app: str = "sup_app:app"
          ) -> ServerProcess:
    return start_server(app, "--workers", "2", "--worker-mode", mode, "--no-access-log", *extra)


# --- several workers -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_two_workers_both_serve(start_server: ServerFactory, mode: str) -> None:
    server = start(start_server, mode)
    # New connections: which worker accepts a connection is up to the kernel and the workers'
    # wake-ups; a handful of keep-alive connections may all stick to one worker.
    with KeepAliveLoad(server.url, clients=8, max_seconds=30, fresh_connections=True) as load:
        for slot in (0, 1):
            load.wait_for(lambda o, s=slot: o.ok and slot_of(o) == s, 5,
                          what=f"responses from slot {slot}")
    outcomes = load.snapshot()
    assert not load.failures()
    pids = {int(o.pid) for o in outcomes}
    server_pid = server.proc.pid
    if mode == "thread":
        assert pids == {server_pid}
        assert {o.worker.split("/")[1] for o in outcomes} == {"devserve-g1-w0", "devserve-g1-w1"}
    else:
        assert len(pids) == 2 and server_pid not in pids
        assert pids <= descendants(server_pid)
        assert {o.worker.split("/")[0] for o in outcomes} == {"devserve-g1-w0", "devserve-g1-w1"}


# --- crashes and the restart budget ----------------------------------------------------------


def test_kill_9_of_a_process_worker_under_load_is_respawned_while_the_other_serves(
    start_server: ServerFactory,
) -> None:
    server = start(start_server, "process")
    with KeepAliveLoad(server.url, clients=10, max_seconds=60) as load:
        victim_slot = 0
        first = load.wait_for(lambda o: o.ok and slot_of(o) == victim_slot, 5,
                              what="responses from slot 0")
        load.wait_for(lambda o: o.ok and slot_of(o) == 1, 5, what="responses from slot 1")
        victim = int(first[0].pid)
        assert victim in descendants(server.proc.pid)
        index = len(server.lines)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        died = server.wait_for(DIED_RE, start=index)
        assert died.group(1) == str(victim_slot)
        assert died.group(2) == f"pid {victim}"
        assert died.group(3) == "exit code -9"
        assert (died.group(4), died.group(5), died.group(6)) == ("0.5", "1", "5")
        # Keep-alive clients stay where they reconnected (slot 1); fresh connections find
        # the respawned slot-0 worker as soon as it accepts.
        respawned_pid, back = _poll_fresh_until(
            server.url, lambda r: WORKER_RE.search(r.headers["x-worker"]).group(2)  # type: ignore[union-attr]
            == str(victim_slot) and int(r.headers["x-pid"]) != victim, timeout=20)
        # The surviving worker kept answering through the whole outage.
        after = load.wait_for(lambda o: o.ok and o.started > back, 20,
                              what="responses after the respawn")
        end = after[-1].finished
    outcomes = load.snapshot()
    during = [o for o in outcomes if o.ok and killed <= o.finished <= back]
    assert during and {slot_of(o) for o in during} >= {1}, "nobody answered during the outage"
    gap = longest_gap(outcomes, killed, end)
    assert gap < 1.0, f"no successful response for {gap:.2f}s after the kill"
    # Only requests in flight on the killed worker's connections may fail, once per client.
    failures = [o for o in outcomes if not o.ok]
    assert all(o.finished >= killed for o in failures), failures[:3]
    assert len(failures) <= load.clients, failures[:3]
    assert len({o.client for o in failures}) == len(failures), failures[:5]
    assert respawned_pid in descendants(server.proc.pid)
    assert victim not in descendants(server.proc.pid)
    assert "exhausted" not in server.output
    assert server.proc.poll() is None


@pytest.mark.parametrize("mode", MODES)
def test_crash_looping_app_exhausts_every_slot_budget_and_the_server_exits_1(
    start_server: ServerFactory, mode: str
) -> None:
    server = start(start_server, mode, app="sup_crash:app")
    # Requests reach the workers that do not run lifespan (thread mode slot 1); every answered
    # request kills its worker too. Stop as soon as the server is gone.
    with httpx.Client(timeout=2) as client:
        def exited() -> bool:
            if server.proc.poll() is not None:
                return True
            try:
                client.get(server.url, headers={"connection": "close"})
            except httpx.HTTPError:
                pass
            return False

        wait_until(exited, 90, "the server exiting", interval=0, detail=lambda: server.output)
    assert server.wait_exit(timeout=10) == 1, server.output
    out = server.output
    for slot in (0, 1):
        died = [m for m in lines_matching(server, DIED_RE) if m.group(1) == str(slot)]
        assert [m.group(5) for m in died] == ["1", "2", "3", "4", "5"], out
        assert [float(m.group(4)) for m in died] == [0.5, 1.0, 2.0, 4.0, 8.0], out
        assert re.search(rf"Worker {slot} exhausted its restart budget", out), out
    assert re.search(r"Every worker slot exhausted its restart budget; last crash: slot \d", out)


def test_one_slot_exhausting_its_budget_is_reported_while_the_other_keeps_serving(
    start_server: ServerFactory,
) -> None:
    """Thread mode: only slot 0 runs lifespan, so only slot 0 crash-loops (sup_crash's lifespan
    kills it); slot 1 keeps serving, which ``--health-path`` shows without calling the app."""
    server = start(start_server, "thread", "--health-path", "/healthz", app="sup_crash:app")
    server.wait_for(r"Worker 0 exhausted its restart budget", timeout=60)
    assert server.proc.poll() is None, server.output
    r = httpx.get(server.url + "/healthz", timeout=5)
    assert (r.status_code, r.text) == (200, "ok\n")
    assert "Every worker slot" not in server.output
    assert all(m.group(1) == "0" for m in lines_matching(server, DIED_RE))


@pytest.mark.parametrize("mode", MODES)
def test_limit_max_requests_replaces_workers_without_charging_the_budget(
    start_server: ServerFactory, mode: str
) -> None:
    server = start(start_server, mode, "--limit-max-requests", "5")
    with KeepAliveLoad(server.url, clients=3, max_seconds=60) as load:
        retired = wait_for_count(
            server, r"Worker (\d+) retired after --limit-max-requests; replacing it", 4, 30)
        load.wait_for(lambda o: o.ok, 60, what="responses")
    failures = load.failures()
    assert not failures, [(o.client, o.error) for o in failures[:5]]
    assert {m.group(1) for m in retired} <= {"0", "1"}
    assert not lines_matching(server, r"died"), server.output
    if mode == "process":
        assert len({o.pid for o in load.snapshot()}) >= 4  # replacements are new processes
    # Still answering, and a real crash now is the slot's *first* charged restart.
    assert httpx.get(server.url, timeout=5).status_code == 200
    index = len(server.lines)
    with httpx.Client(timeout=5) as client:
        assert client.get(server.url + "/crash").text == "crashing"
    died = server.wait_for(DIED_RE, start=index)
    assert (died.group(5), died.group(6)) == ("1", "5"), died.group(0)
    assert httpx.get(server.url, timeout=10).status_code == 200


# --- in-process Supervisor ----------------------------------------------------------------------


@contextmanager
def in_process_supervisor(app: Any, *, mode: str = "thread", workers: int = 2,
                          collector: RecordingCollector | None = None,
                          app_path: str | None = None, app_dir: Path | None = None,
                          app_loader: Any = None,
                          **options: Any) -> Iterator[tuple[Supervisor, str]]:
    """Run a real Supervisor on a real socket in a thread; yields it and its base URL."""
    overrides: dict[str, Any] = {"app": app_path or app, "host": "127.0.0.1", "port": 0,
                                 "workers": workers, "log_level": "warning",
                                 "timeout_graceful_shutdown": 5, **options}
    if app_dir is not None:
        overrides["app_dir"] = str(app_dir)
    config = load_config(overrides, environ={}, cwd=app_dir or APPS)
    sock = bind_socket(config)
    host, port = sock.getsockname()[:2]
    sup = Supervisor(config, app, mode=mode,  # type: ignore[arg-type]
                     lifecycle_collector=collector, app_path=app_path, app_loader=app_loader)
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(sup.run([sock]))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run, name="test-supervisor", daemon=True)
    thread.start()
    try:
        def ready() -> bool:
            assert not result, f"Supervisor.run ended during start-up: {result}"
            return sup.generation >= 1

        wait_until(ready, 30, "generation 1 ready")
        yield sup, f"http://{host}:{port}"
    finally:
        sup.shutdown()
        thread.join(30)
        sock.close()
    assert not thread.is_alive(), "Supervisor.run did not return after shutdown()"
    assert result == [0], result


def test_concurrent_restarts_and_reloads_leave_exactly_one_full_generation() -> None:
    with in_process_supervisor(sup_app.app, workers=2) as (sup, url):
        with KeepAliveLoad(url, clients=4, max_seconds=60) as load:
            calls = [sup.restart_workers, sup.graceful_reload] * 4
            barrier = threading.Barrier(len(calls))
            errors: list[BaseException] = []

            def call(fn: Any) -> None:
                try:
                    barrier.wait(10)
                    for _ in range(3):
                        fn()
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=call, args=(fn,), daemon=True) for fn in calls]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert not any(t.is_alive() for t in threads), "a reload/restart call hung"
            assert not errors, errors
            # All calls returned: one complete generation, nothing of any other one.
            handles = sup.live_handles()
            assert len(handles) == sup.worker_count == 2
            assert {h.generation for h in handles} == {sup.generation}
            assert sorted(h.worker_id for h in handles) == [0, 1]
            assert sup.generation >= 2
            workers = [t.name for t in threading.enumerate() if WORKER_RE.fullmatch(t.name)]
            assert sorted(workers) == [f"devserve-g{sup.generation}-w{i}" for i in (0, 1)], workers
            r = httpx.get(url, timeout=5)
            assert r.status_code == 200
            assert f"devserve-g{sup.generation}-" in r.headers["x-worker"]
            seen = time.monotonic()
            load.wait_for(lambda o: o.ok and o.started > seen, 10, what="responses after")
        failures = load.failures()
        assert not failures, [(o.client, o.error) for o in failures[:5]]


def _write_module(directory: Path, name: str, version: str, startup_fails: bool = False) -> None:
    source = (APPS / "sup_app.py").read_text().replace('VERSION = "v1"', f"VERSION = {version!r}")
    if startup_fails:
        source = source.replace("STARTUP_FAILS = False", "STARTUP_FAILS = True")
    (directory / f"{name}.py").write_text(source)


def _index(events: list[Event], predicate: Any) -> list[int]:
    return [i for i, e in enumerate(events) if predicate(e)]


@contextmanager
def reloadable_supervisor(tmp_path: Path, mode: str, collector: RecordingCollector
                          ) -> Iterator[tuple[Supervisor, str, Any]]:
    """An in-process Supervisor serving ``sup_app`` copied under a unique module name into
    *tmp_path*; yields it, its URL and ``edit(version, startup_fails=False)``."""
    module = f"sup_events_{mode}_{uuid.uuid4().hex[:8]}"
    app_path = f"{module}:app"

    def edit(version: str, startup_fails: bool = False) -> None:
        _write_module(tmp_path, module, version, startup_fails)

    importer = ProjectImporter(app_path, dirs=[tmp_path], app_dir=str(tmp_path))

    def loader(changed: Collection[Path] | None) -> ReloadOutcome:
        return importer.reload(changed)

    edit("v1")
    try:
        app = importer.load().app if mode == "thread" else None
        # The loader as devserve.server wires it for an import string (thread mode).
        with in_process_supervisor(app, mode=mode, collector=collector, app_path=app_path,
                                   app_dir=tmp_path,
                                   app_loader=loader if mode == "thread" else None
                                   ) as (sup, url):
            yield sup, url, edit
    finally:
        importer.close()
        sys.modules.pop(module, None)
        if str(tmp_path.resolve()) in sys.path:
            sys.path.remove(str(tmp_path.resolve()))


@pytest.mark.parametrize("mode", MODES)
def test_reload_emits_lifecycle_events_in_order(tmp_path: Path, mode: str) -> None:
    collector = RecordingCollector()
    with reloadable_supervisor(tmp_path, mode, collector) as (sup, url, edit):
        assert httpx.get(url, timeout=5).text == "v1"
        edit("v2")
        mark = len(collector.events)
        sup.graceful_reload()
        events = collector.events[mark:]
        assert httpx.get(url, timeout=5).text == "v2"
    kinds = [e.kind for e in events]
    started = _index(events, lambda e: isinstance(e, ReloadStarted))
    gen_started = _index(events, lambda e: isinstance(e, GenerationStarted)
                         and e.generation == 2)
    ready = _index(events, lambda e: isinstance(e, WorkerReady) and e.generation == 2)
    promoted = _index(events, lambda e: isinstance(e, GenerationPromoted) and e.generation == 2)
    draining = _index(events, lambda e: isinstance(e, WorkerDraining) and e.generation == 1)
    stopped = _index(events, lambda e: isinstance(e, WorkerStopped) and e.generation == 1)
    retired = _index(events, lambda e: isinstance(e, GenerationRetired) and e.generation == 1)
    completed = _index(events, lambda e: isinstance(e, ReloadCompleted))
    assert len(started) == 1 and len(gen_started) == 1 and len(promoted) == 1, kinds
    assert len(draining) == 2 and len(stopped) == 2, kinds
    assert len(retired) == 1 and len(completed) == 1, kinds
    assert (started[0] < gen_started[0] < min(ready) <= max(ready) < promoted[0]
            < min(draining) <= max(draining) < retired[0] < completed[0]), kinds
    assert {events[i].slot for i in draining} == {0, 1}  # type: ignore[attr-defined]
    done = events[completed[0]]
    assert isinstance(done, ReloadCompleted) and done.generation == 2
    # the intent when it starts, the way it went when it completes (a manual reload: full)
    assert events[started[0]].strategy == (  # type: ignore[attr-defined]
        "reimport" if mode == "thread" else "process-roll")
    assert done.strategy == ("full" if mode == "thread" else "process-roll")
    phases = done.phases
    assert {"ready", "drained", "total"} <= set(phases), phases
    if mode == "thread":
        assert "import" in phases and phases["import"] <= phases["ready"], phases
    assert 0 < phases["ready"] <= phases["drained"] <= phases["total"], phases
    # One WorkerReady per worker of the new generation (a display counts them).
    ready_slots = sorted(events[i].slot for i in ready)  # type: ignore[attr-defined]
    assert ready_slots == [0, 1], f"WorkerReady(generation=2) for slots {ready_slots}: {kinds}"


@pytest.mark.parametrize("mode", MODES)
def test_failed_reload_emits_reload_failed_and_keeps_the_generation(
    tmp_path: Path, mode: str
) -> None:
    collector = RecordingCollector()
    with reloadable_supervisor(tmp_path, mode, collector) as (sup, url, edit):
        edit("v2", startup_fails=True)  # the new generation's lifespan startup fails
        mark = len(collector.events)
        sup.graceful_reload()
        events = collector.events[mark:]
        failed = [e for e in events if isinstance(e, ReloadFailed)]
        assert len(failed) == 1, [e.kind for e in events]
        assert failed[0].generation == 2
        assert failed[0].strategy == ("reimport" if mode == "thread" else "process-roll")
        assert "startup exploded in v2" in failed[0].error, failed[0]
        assert not [e for e in events if isinstance(e, GenerationPromoted | ReloadCompleted)]
        assert sup.generation == 1
        handles = sup.live_handles()
        assert len(handles) == 2 and {h.generation for h in handles} == {1}
        assert httpx.get(url, timeout=5).text == "v1"
        # A fix reloads fine afterwards.
        edit("v3")
        sup.graceful_reload()
        assert collector.of_type(ReloadCompleted)[-1].generation == 2  # type: ignore[attr-defined]
        assert httpx.get(url, timeout=5).text == "v3"


def test_in_process_supervisor_answers_on_its_socket() -> None:
    """The helper above serves real HTTP and stops cleanly (guards the other in-process tests)."""
    with in_process_supervisor(sup_app.app, workers=1) as (sup, url):
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5):
            pass
        assert httpx.get(url, timeout=5).text == "v1"
        assert sup.mode == "thread" and sup.worker_count == 1 and sup.generation == 1
