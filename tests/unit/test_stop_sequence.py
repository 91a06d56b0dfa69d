"""The pieces of a stop on real sockets (127.0.0.1:0) and real workers in threads: a worker
closing its listener fd — the last one first accepting and serving what the kernel still queues,
after which new connections are refused, never reset — for the asyncio Worker and the sync
AcceptDistributor; the Supervisor's order over thread workers (``stopping.stop_accepting``);
graceful closes; the process-mode commands and their acknowledgement; the shutdown delay; and
how the phases read in the log and on the dashboard."""

from __future__ import annotations

import io
import multiprocessing
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from conftest import wait_until
from rich.console import Console

from devserve import lifecycle as ev
from devserve.config import Config
from devserve.display import model, render
from devserve.display.plain import describe
from devserve.lifecycle import RecordingCollector, ShutdownPhase
from devserve.supervision.handles import _WorkerHandle
from devserve.supervision.ipc import AcceptStopped, Channel, MarkUnhealthy, StopAccepting
from devserve.supervision.signals import StopRequest, install_signals
from devserve.supervision.stopping import shutdown_delay, stop_accepting
from devserve.workers.sync_worker import SyncWorker
from devserve.workers.worker import Worker
from tests.load import connect_refused

BLOCK = threading.Event()  # /block holds its worker's event loop until this is set
CLOSE = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/block":
        BLOCK.wait(10)  # blocks the loop on purpose: new connections wait in the backlog
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def config(**options: Any) -> Config:
    return Config(loop="asyncio", access_log=False, health_path="/healthz", **options)


class Running:
    """Worker threads on ``dup()``s of one listener, as the thread launcher runs them."""

    def __init__(self, count: int = 1) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.listener.getsockname()[1]
        self.workers = [Worker(config(), app, self.listener.dup(), slot=i, generation=1)
                        for i in range(count)]
        self.threads = [threading.Thread(target=w.run, daemon=True) for w in self.workers]
        self.handles = [_WorkerHandle(i, t, w, 1)
                        for i, (t, w) in enumerate(zip(self.threads, self.workers, strict=True))]
        for thread in self.threads:
            thread.start()
        for worker in self.workers:
            assert worker.ready.wait(5) and worker.startup_error is None

    def stop(self) -> None:
        self.listener.close()
        for worker in self.workers:
            worker.shutdown()
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive(), "the worker did not stop"


@pytest.fixture
def running() -> Iterator[Running]:
    BLOCK.clear()
    served = Running(2)
    yield served
    BLOCK.set()
    served.stop()


def request(port: int, data: bytes = CLOSE) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(data)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server's FIN; a reset would raise here."""
    data = b""
    with sock:
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_the_last_worker_serves_what_is_queued_then_new_connections_are_refused() -> None:
    BLOCK.clear()
    served = Running(1)
    try:
        served.listener.close()  # the Supervisor's own fd goes first
        blocker = request(served.port, b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_until(lambda: served.workers[0].in_flight == 1, 5, "the loop held by /block")
        queued = [request(served.port) for _ in range(10)]  # the loop cannot accept them
        done = served.workers[0].stop_accepting(backlog=True)
        BLOCK.set()
        assert done.wait(5)
        assert connect_refused("127.0.0.1", served.port)
        for sock in queued:
            assert read_all(sock).endswith(b"\r\n\r\nok")
        blocker.close()
    finally:
        BLOCK.set()
        served.stop()


def test_a_worker_that_is_not_the_last_closes_its_fd_and_keeps_serving(running: Running
                                                                        ) -> None:
    first, last = running.workers
    keep_alive = request(running.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert keep_alive.recv(65536).endswith(b"ok")
    running.listener.close()
    assert first.stop_accepting(backlog=False).wait(5)
    for _ in range(5):  # the other worker still accepts
        assert read_all(request(running.port)).endswith(b"ok")
    assert last.stop_accepting(backlog=True).wait(5)
    assert connect_refused("127.0.0.1", running.port)
    keep_alive.sendall(CLOSE)  # open connections are still served
    assert read_all(keep_alive).endswith(b"ok")


def test_the_supervisor_closes_its_fd_then_the_workers_in_order(running: Running) -> None:
    keep_alive = request(running.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert keep_alive.recv(65536).endswith(b"ok")
    stop_accepting([running.listener], running.handles)
    assert running.listener.fileno() == -1
    assert connect_refused("127.0.0.1", running.port)
    keep_alive.sendall(CLOSE)
    assert read_all(keep_alive).endswith(b"ok")


JUNK = b"NOT HTTP\r\n\r\n" + b"x" * 512 * 1024  # answered 400 long before it is all read


def test_a_close_with_unread_bytes_is_graceful(running: Running) -> None:
    """The server closes while the client is still sending: FIN, the rest is read and
    discarded, the client sees the whole answer and EOF — a plain close() with unread bytes
    would send an RST (failing the send, and possibly destroying the answer)."""
    data = read_all(request(running.port, JUNK))
    assert data.startswith(b"HTTP/1.1 400 ") and data.endswith(b"Bad Request\n")


class SyncServed:
    """A SyncWorker as a process child runs it: its own AcceptDistributor on the listener."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.listener.getsockname()[1]
        self.worker = SyncWorker.standalone(config(threads=2), wsgi, self.listener.dup(),
                                            interface="wsgi", slot=0, generation=1,
                                            collector=None)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()
        assert self.worker.ready.wait(5) and self.worker.startup_error is None


def test_the_sync_distributor_takes_the_backlog_and_closes_gracefully() -> None:
    served = SyncServed()
    try:
        served.listener.close()
        rejected = request(served.port, JUNK)
        waiting = [request(served.port) for _ in range(10)]
        assert served.worker.stop_accepting(backlog=True).wait(5)
        assert connect_refused("127.0.0.1", served.port)
        for sock in waiting:
            assert read_all(sock).endswith(b"\r\n\r\nok")
        data = read_all(rejected)
        assert data.startswith(b"HTTP/1.1 400 ") and data.endswith(b"Bad Request\n")
    finally:
        served.worker.shutdown()
        served.thread.join(10)
    assert not served.thread.is_alive()


def test_process_handles_send_the_stop_steps_and_hear_the_acknowledgement() -> None:
    parent, child = multiprocessing.Pipe()
    handle = _WorkerHandle(0, threading.Thread(target=lambda: None), None, 1,
                           channel=Channel(parent))
    handle.mark_unhealthy()
    assert child.recv() == MarkUnhealthy()
    done = handle.stop_accepting(True)
    assert child.recv() == StopAccepting(backlog=True)
    assert not done.is_set()
    handle.on_child_message(AcceptStopped())
    assert done.is_set()
    child.close()
    handle.accept_stopped.clear()
    assert handle.stop_accepting(False).is_set(), "a child that is gone holds no fd"
    parent.close()


def test_the_shutdown_delay_marks_health_503_and_waits(running: Running) -> None:
    collector = RecordingCollector()
    stop = StopRequest(collector.emit)
    stop.request()
    began = time.monotonic()
    shutdown_delay(running.handles, 0.3, stop, collector.emit)
    assert time.monotonic() - began >= 0.3
    assert collector.events == [ShutdownPhase(phase="delay", seconds=0.3,
                                              ts=collector.events[0].ts)]
    for _ in range(4):  # every worker: health 503, the app 200
        assert b" 503 " in read_all(request(running.port, CLOSE.replace(b"/", b"/healthz", 1)))
        assert read_all(request(running.port)).startswith(b"HTTP/1.1 200 ")


def test_sigint_skips_the_delay_and_cuts_a_running_one_short(running: Running) -> None:
    emitted: list[ev.Event] = []
    stop = StopRequest(emitted.append)
    stop.request(skip_delay=True)
    shutdown_delay(running.handles, 30, stop, emitted.append)
    assert emitted == [] and all(not w.state.unhealthy for w in running.workers)

    stop = StopRequest(emitted.append)
    stop.request()
    waiter = threading.Thread(target=shutdown_delay,
                              args=(running.handles, 30, stop, emitted.append))
    waiter.start()
    wait_until(lambda: emitted, 5, "the delay under way")
    stop.request(skip_delay=True)  # Ctrl+C during the delay
    waiter.join(5)
    assert not waiter.is_alive()


def test_a_signal_arriving_inside_event_wait_does_not_deadlock() -> None:
    """The handler runs on the main thread between two bytecodes, possibly while that thread
    holds the lock of the very Event the stop sets (inside ``Event.wait``): it must not take
    that lock itself. Reproduced exactly: hold the lock, raise SIGTERM, let go."""
    stop = StopRequest(lambda event: None)
    names: list[str] = []

    def on_stop(name: str) -> None:
        names.append(name)
        stop.request(skip_delay=name == "SIGINT")

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        assert install_signals(stop=on_stop, force=stop.force, reload=lambda: None)
        with stop._stop._cond:  # what Event.wait holds when the signal lands
            signal.raise_signal(signal.SIGTERM)  # the handler has run when this returns
        assert stop.wait(5) and names == ["SIGTERM"] and not stop.undelayed
        signal.raise_signal(signal.SIGINT)
        wait_until(lambda: stop.undelayed, 5, "SIGINT skipping the delay")
        signal.raise_signal(signal.SIGINT)
        wait_until(lambda: stop.forced, 5, "a second SIGINT forcing the stop")
        assert names == ["SIGTERM", "SIGINT"]
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_the_phases_read_in_the_log_and_on_the_dashboard() -> None:
    delay = ShutdownPhase(phase="delay", seconds=5)
    draining = ShutdownPhase(phase="draining", seconds=30)
    assert describe(delay) == (20, "Shutdown delay: health 503 for 5 s")
    assert describe(draining) == (
        20, "Draining: new connections refused, in-flight requests finish within 30 s")
    snap = model.reduce_all(model.Snapshot(), [ev.ServerStopping(reason="SIGTERM"), delay])
    assert snap.stop_phase == "shutdown delay: health 503 for 5 s"
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(render.header(snap, 0.0))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "stopping: SIGTERM · shutdown delay: health 503 for 5 s" in out
    assert model.reduce(snap, draining).stop_phase.startswith("draining")  # type: ignore[union-attr]
