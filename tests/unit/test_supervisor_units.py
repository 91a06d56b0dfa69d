"""Supervisor pieces that need no HTTP traffic: nothing runs after shutdown, the worker-handle
commands and named states (real pipes, a real worker thread, real processes), and the
Supervisor's own start/stop on a real socket.

(``choose_mode``, ``_parallel_join_targets``, ``_target_id``, ``CrashBudget`` and the
``supervision`` modules are covered elsewhere.)
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
from devserve.lifecycle import RecordingCollector
from devserve.net.sockets import bind_socket
from devserve.supervision.ipc import Channel, Drain, Force, Shutdown
from devserve.supervision.rollout import WorkerState
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


def make_supervisor(tmp_path: Path, workers: int = 2, **kwargs: Any) -> Supervisor:
    config = load_config({"app": hello, "workers": workers, "host": "127.0.0.1", "port": 0,
                          "log_level": "warning"}, environ={}, cwd=tmp_path)
    return Supervisor(config, hello, mode="thread", **kwargs)


# --- serialisation (the runner itself: test_supervision_coalesce.py) ------------------------------


def test_nothing_runs_after_shutdown(tmp_path: Path) -> None:
    collector = RecordingCollector()
    sup = make_supervisor(tmp_path, lifecycle_collector=collector)
    sup.shutdown()
    sup.graceful_reload()
    sup.restart_workers()
    assert collector.events == []
    assert sup.generation == 0


# --- worker handles --------------------------------------------------------------------------


def test_process_handle_sends_its_commands_over_the_pipe() -> None:
    parent, child = multiprocessing.Pipe()
    handle = _WorkerHandle(3, threading.Thread(target=lambda: None), None, generation=7,
                           channel=Channel(parent))
    assert handle.state is WorkerState.STARTING and not handle.expected_exit
    handle.start_draining(2.5)
    assert handle.state is WorkerState.DRAINING and handle.expected_exit
    assert child.recv() == Drain(grace=2.5)
    handle.shutdown(1.0)
    assert child.recv() == Shutdown(grace=1.0)
    handle.force()
    assert child.recv() == Force()
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
        assert handle.state is WorkerState.DRAINING and not worker.retired
        assert not handle.exited_cleanly()
    finally:
        listener.close()


@pytest.mark.parametrize(("code", "retired"), [(0, True), (3, False)])
def test_a_process_that_exited_0_by_itself_counts_as_retired(code: int, retired: bool) -> None:
    process = multiprocessing.get_context("spawn").Process(target=sys.exit, args=(code,))
    process.start()
    process.join(30)
    assert process.exitcode == code
    handle = _WorkerHandle(0, process, None)
    assert handle.exited_cleanly() is retired


# --- the Supervisor itself -----------------------------------------------------------------------


def test_state_before_run(tmp_path: Path) -> None:
    sup = make_supervisor(tmp_path, workers=3)
    assert sup.mode == "thread"
    assert sup.mode_reason == "chosen by the caller"
    assert sup.worker_count == 3
    assert sup.generation == 0
    assert sup.live_handles() == []
    assert sup.exit_code == 0
    assert sup.reload_grace == sup._config.reload_grace


def test_options_are_given_at_construction(tmp_path: Path) -> None:
    sup = make_supervisor(tmp_path, reload_grace=1.5)
    assert sup.reload_grace == 1.5


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
    assert {h.state for h in handles} == {WorkerState.SERVING}
    workers = [h.target for h in handles]
    sup.shutdown()
    thread.join(20)
    assert not thread.is_alive()
    assert result == [0]
    assert not any(t.is_alive() for t in workers)
    assert sock.fileno() == -1  # the listener is closed only at final shutdown
