"""SyncWorker on the shared lifecycle: real WSGI requests on 127.0.0.1, its gauges, a shutdown
that lets an in-flight request finish, and a force that frees a thread stuck in a read."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from devserve.config import Config
from devserve.lifecycle import RecordingCollector, WorkerStats
from devserve.workers.sync_worker import SyncWorker

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def hello(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    body = b"hello " + environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


class Served:
    """A SyncWorker as a process worker would run it (its own distributor and pool) on a
    listener bound to 127.0.0.1:0, in a thread."""

    def __init__(self, app: WSGIApp, *, grace: float = 30.0) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.collector = RecordingCollector()
        config = Config(loop="asyncio", threads=2, timeout_graceful_shutdown=grace,
                        access_log=False)
        self.worker = SyncWorker.standalone(config, app, self.listener.dup(), interface="wsgi",
                                            slot=0, generation=1, collector=self.collector)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()
        assert self.worker.ready.wait(5) and self.worker.startup_error is None

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def join(self, timeout: float = 5.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"
        self.listener.close()


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_serves_reports_its_gauges_and_stops_on_shutdown() -> None:
    served = Served(hello)
    with served.connect() as sock:
        sock.sendall(b"GET /there HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        response = read_all(sock)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert response.endswith(b"hello /there")

    stats = served.collector.wait_for(WorkerStats)
    while not any(isinstance(e, WorkerStats) and e.requests == 1 for e in stats):
        stats = served.collector.wait_for(WorkerStats, len(stats) + 1)  # the next change
    served.worker.shutdown()
    served.join()
    assert served.worker.state.shutting_down
    assert served.worker.is_idle() and served.worker.forced_connections == 0


def blocked_upload(reading: threading.Event) -> WSGIApp:
    def upload(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        reading.set()
        body = environ["wsgi.input"].read()  # the client never sends the rest
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    return upload


def start_upload(served: Served, reading: threading.Event) -> socket.socket:
    sock = served.connect()
    sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\npartial")
    assert reading.wait(5)
    assert served.worker.in_flight == 1 and not served.worker.is_idle()
    return sock


def test_when_the_grace_runs_out_the_blocked_thread_is_freed_and_counted() -> None:
    reading = threading.Event()
    served = Served(blocked_upload(reading), grace=0.2)
    with start_upload(served, reading):
        served.worker.shutdown()
        served.join()
    assert served.worker.forced_connections == 1
    assert served.worker.is_idle()


def test_force_cuts_the_shutdown_short() -> None:
    reading = threading.Event()
    served = Served(blocked_upload(reading), grace=30.0)
    with start_upload(served, reading):
        began = time.monotonic()
        served.worker.shutdown()
        served.worker.force_stop()
        served.join()
    assert time.monotonic() - began < 5
    assert served.worker.mode == "force" and served.worker.is_idle()
