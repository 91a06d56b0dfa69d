"""Supervisor pieces that need no HTTP traffic: the serialisation of reloads/restarts, the
worker-handle commands (real pipes, a real worker thread, real processes), and the Supervisor's
own start/stop on a real socket.

(``choose_mode``, ``_parallel_join_targets``, ``_target_id`` and ``CrashBudget`` are covered
elsewhere.)
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from devserve.config import load_config
from devserve.net.sockets import bind_socket
from devserve.supervisor import Supervisor, _WorkerHandle
from devserve.workers.worker import Worker


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def make_supervisor(tmp_path: Path, workers: int = 2, **options: Any) -> Supervisor:
    config = load_config({"app": hello, "workers": workers, "host": "127.0.0.1", "port": 0,
                          "log_level": "warning", **options}, environ={}, cwd=tmp_path)
    return Supervisor(config, hello, mode="thread")


# --- _serialized: one at a time, a request made meanwhile coalesced into one follow-up -----------


def test_requests_made_while_one_runs_are_coalesced_into_one_follow_up(tmp_path: Path) -> None:
    sup = make_supervisor(tmp_path)
    release = threading.Event()
    running = threading.Event()
    active = 0
    max_active = 0
    runs: list[str] = []
    lock = threading.Lock()

    def impl(name: str, block: bool = False) -> Any:
        def run() -> None:
            nonlocal active, max_active
            with lock:
                active += 1
                max_active = max(max_active, active)
            runs.append(name)
            if block:
                running.set()
                assert release.wait(10)
            with lock:
                active -= 1
        return run

    first = threading.Thread(target=sup._serialized, args=(impl("first", block=True),))
    first.start()
    assert running.wait(10)
    queued = [threading.Thread(target=sup._serialized, args=(impl(f"q{i}"),)) for i in range(5)]
    for t in queued:
        t.start()
    for t in queued:
        t.join(5)  # they queue and return while the first one still runs
    assert not any(t.is_alive() for t in queued)
    assert runs == ["first"]
    release.set()
    first.join(10)
    assert not first.is_alive()
    assert len(runs) == 2, runs  # exactly one follow-up for the five requests
    assert runs[1].startswith("q")
    assert max_active == 1
    # Idle again: the next request runs at once, in the caller's thread.
    sup._serialized(impl("later"))
    assert runs[-1] == "later"


class YieldingLock:
    """A real lock that gives up the CPU right after each release, as a preempting scheduler
    may at any moment. It changes no semantics; it only makes one interleaving likely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> YieldingLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        time.sleep(0.002)


def test_a_request_arriving_as_the_running_one_finishes_is_not_lost(tmp_path: Path) -> None:
    """Supervisor docstring: a reload asked for while one runs is coalesced into one
    follow-up, *never lost*. The request made right after the running one checked for a
    follow-up must still run (by the runner, or by its own caller)."""
    sup = make_supervisor(tmp_path)
    sup._pending_lock = YieldingLock()  # type: ignore[assignment]
    lost = 0
    for _ in range(20):
        first_ran = threading.Event()
        second_runs: list[int] = []

        def second_caller(done: threading.Event = first_ran, out: list[int] = second_runs
                          ) -> None:
            assert done.wait(10)
            sup._serialized(lambda: out.append(1))

        t2 = threading.Thread(target=second_caller)
        t2.start()
        t1 = threading.Thread(target=sup._serialized, args=(first_ran.set,))
        t1.start()
        t1.join(10)
        t2.join(10)
        assert not t1.is_alive() and not t2.is_alive()
        if not second_runs:
            lost += 1
    assert lost == 0, f"{lost} of 20 requests made while a reload finished never ran"


def test_nothing_runs_after_shutdown(tmp_path: Path) -> None:
    sup = make_supervisor(tmp_path)
    sup.shutdown()
    ran: list[int] = []
    sup._serialized(lambda: ran.append(1))
    sup.graceful_reload()
    sup.restart_workers()
    assert ran == []


# --- worker handles --------------------------------------------------------------------------


def test_process_handle_sends_its_commands_over_the_pipe() -> None:
    parent, child = multiprocessing.Pipe()
    handle = _WorkerHandle(3, threading.Thread(target=lambda: None), None, generation=7)
    handle.conn = parent
    assert not handle.expected_exit
    handle.start_draining(2.5)
    assert handle.expected_exit
    assert [child.recv(), child.recv()] == [("grace", 2.5), "drain"]
    handle.shutdown(1.0)
    assert [child.recv(), child.recv()] == [("grace", 1.0), "shutdown"]
    handle.force()
    assert child.recv() == "force"
    assert not child.poll(0.05)
    child.close()
    handle.force()  # the worker is gone: nothing to tell, and no exception
    parent.close()
    handle.start_draining(1.0)


def test_thread_handle_drains_a_real_worker(tmp_path: Path) -> None:
    config = load_config({"app": hello, "host": "127.0.0.1", "port": 0}, environ={},
                         cwd=tmp_path)
    listener = bind_socket(config)
    try:
        worker = Worker(config, hello, listener.dup(), slot=0, generation=1)
        thread = threading.Thread(target=worker.run, daemon=True)
        handle = _WorkerHandle(0, thread, worker, generation=1)
        thread.start()
        assert worker.ready.wait(10) and worker.startup_error is None
        assert handle.is_alive() and handle.ident == thread.name
        handle.start_draining(0.3)
        assert worker.grace == 0.3
        thread.join(5)
        assert not thread.is_alive(), "the drained worker did not stop"
        assert handle.expected_exit and not worker.retired
    finally:
        listener.close()


@pytest.mark.parametrize(("code", "retired"), [(0, True), (3, False)])
def test_a_process_that_exited_0_by_itself_counts_as_retired(code: int, retired: bool) -> None:
    process = multiprocessing.get_context("spawn").Process(target=sys.exit, args=(code,))
    process.start()
    process.join(30)
    assert process.exitcode == code
    handle = _WorkerHandle(0, process, None)
    assert Supervisor._retired(handle) is retired


# --- the Supervisor itself -----------------------------------------------------------------------


def test_state_before_run(tmp_path: Path) -> None:
    sup = make_supervisor(tmp_path, workers=3)
    assert sup.mode == "thread"
    assert sup.mode_reason == "chosen by the caller"
    assert sup.worker_count == 3
    assert sup.generation == 0
    assert sup.live_handles() == []
    assert sup.exit_code == 0


def test_run_serves_one_generation_and_returns_0_after_shutdown(tmp_path: Path) -> None:
    sup = make_supervisor(tmp_path, workers=2)
    sock = bind_socket(sup._config)
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(sup.run([sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while sup.generation < 1:
        assert time.monotonic() < deadline and thread.is_alive(), result
        time.sleep(0.01)
    handles = sup.live_handles()
    assert sorted(h.worker_id for h in handles) == [0, 1]
    assert {h.generation for h in handles} == {1}
    workers = [h.target for h in handles]
    sup.shutdown()
    thread.join(20)
    assert not thread.is_alive()
    assert result == [0]
    assert not any(t.is_alive() for t in workers)
    assert sock.fileno() == -1  # the listener is closed only at final shutdown
