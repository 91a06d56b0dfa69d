"""The HTTP/3 worker: one event loop thread serving the Supervisor's UDP socket over QUIC.

The socket is read through ``loop.create_datagram_endpoint(sock=...)``; each datagram goes to
the sans-IO :class:`H3Endpoint` (routing by connection ID) and then to the connection's
:class:`H3Conn` (one ASGI cycle per request stream, one loop timer per connection).

Reloads: in thread mode the worker outlives generations. It serves each *new* request stream
with ``app_ref.app``, which the Supervisor swaps when it promotes a generation, so established
QUIC connections survive a reload. In process mode the app lives in the child, so a reload
stops the child (GOAWAY, in-flight streams finish within the grace, CONNECTION_CLOSE) and
starts a fresh one on the same socket: clients reconnect (see README, HTTP/3).

Control (thread-safe): ``start_draining()``/``shutdown()`` (GOAWAY, finish in-flight streams
within ``grace``, then close), ``force_stop()``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from devserve.asgi.lifespan import Lifespan, LifespanFailed
from devserve.asgi.types import ASGIApp
from devserve.config import Config
from devserve.lifecycle import LifecycleCollector, WorkerStats
from devserve.protocols.http3 import H3Endpoint, server_configuration
from devserve.serve.h3 import AppRef, H3Conn
from devserve.serve.state import WorkerState
from devserve.workers.worker import new_event_loop

logger = logging.getLogger("devserve.error")

STATS_INTERVAL = 0.5


def quic_configuration(config: Config) -> Any:
    """QUIC settings from *config*: the same certificate as TCP (``--https`` dev cert too)."""
    from devserve.net.tls import cache_dir, ensure_dev_certificate

    certfile, keyfile = config.ssl_certfile, config.ssl_keyfile
    if certfile is None:
        dev = ensure_dev_certificate(cache_dir())
        certfile, keyfile = str(dev.cert_path), str(dev.key_path)
    return server_configuration(certfile, keyfile, config.ssl_keyfile_password,
                                idle_timeout=max(config.timeout_keep_alive, 1.0))


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, worker: H3Worker) -> None:
        self.worker = worker

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.worker.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors for one peer (e.g. port unreachable) must not stop the endpoint


class H3Worker:
    """Serves HTTP/3 on one UDP socket from its own event loop."""

    def __init__(self, config: Config, app_ref: AppRef, sock: socket.socket, *,
                 slot: int = 0, collector: LifecycleCollector | None = None,
                 run_lifespan: bool = False) -> None:
        self.config = config
        self.run_lifespan = run_lifespan  # process mode: this child owns its app's lifespan
        self.sock = sock
        self.slot = slot
        self.app_ref = app_ref
        self.grace = config.timeout_graceful_shutdown
        self.state = WorkerState(config, app_ref.app, slot=slot, generation=app_ref.generation,
                                 collector=collector)
        self.endpoint = H3Endpoint(
            quic_configuration(config),
            max_connections=config.limit_concurrency or 1000,
            max_streams=config.h2_max_concurrent_streams,
        )
        name = sock.getsockname()
        self.server: tuple[str, int] = (str(name[0]), int(name[1]))
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self.startup_error: BaseException | None = None
        self.closing = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set in run()
        self.conns: dict[Any, H3Conn] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._stop: asyncio.Event | None = None
        self._mode = "running"

    # -- control (any thread) --------------------------------------------------------------
    def run(self) -> None:
        loop = new_event_loop(self.config.loop)
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self.startup_error = self.startup_error or exc
            raise
        finally:
            self.ready.set()
            try:
                tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                self.stopped.set()

    def start_draining(self) -> None:
        self._request("draining")

    def shutdown(self) -> None:
        self._request("draining")

    def force_stop(self) -> None:
        self._request("force")

    def is_idle(self) -> bool:
        return not self.state.tasks

    def _request(self, mode: str) -> None:
        order = ("running", "draining", "force")
        if order.index(mode) <= order.index(self._mode):
            return
        self._mode = mode
        loop = self.loop
        if loop is None or loop.is_closed() or self._stop is None:
            return
        try:
            loop.call_soon_threadsafe(self._stop.set)
        except RuntimeError:
            pass

    # -- the loop side ---------------------------------------------------------------------
    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        lifespan: Lifespan | None = None
        if self.run_lifespan and self.config.lifespan != "off":
            lifespan = Lifespan(self.app_ref.app, self.config.lifespan)
            try:
                await lifespan.startup()
            except LifespanFailed as exc:
                self.startup_error = exc
                return
            if lifespan.supported:
                self.app_ref.lifespan_state = lifespan.state
        transport, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(self),
                                                           sock=self.sock)
        self._transport = transport
        stats = loop.call_later(STATS_INTERVAL, self._stats)
        self.ready.set()
        if self._mode != "running":
            self._stop.set()
        await self._stop.wait()
        self.closing = True
        self.endpoint.accepting = False
        for conn in list(self.conns.values()):
            conn.goaway()
        deadline = time.monotonic() + self.grace
        while self.state.tasks and self._mode != "force" and time.monotonic() < deadline:
            await asyncio.wait(list(self.state.tasks), timeout=0.05)
        for conn in list(self.conns.values()):
            conn.close()
        if self.state.tasks:
            await asyncio.wait(list(self.state.tasks), timeout=1.0)
        stats.cancel()
        transport.close()
        if lifespan is not None:
            await lifespan.shutdown(timeout=self.grace)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        endpoint = self.endpoint
        proto, events = endpoint.receive(data, addr, self.loop.time())
        replies = endpoint.take_replies()
        if replies:
            self.send_datagrams(replies)
        if proto is None:
            return
        conn = self.conns.get(proto)
        if conn is None:
            if proto.timer() is None:
                endpoint.forget(proto)  # an Initial that did not decrypt: keep no state
                return
            conn = self.conns[proto] = H3Conn(self, proto, addr)
        conn.handle(events)
        conn.flush()
        endpoint.track(proto)

    def send_datagrams(self, datagrams: list[tuple[bytes, Any]]) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        for data, addr in datagrams:
            transport.sendto(data, addr)

    def connection_ended(self, conn: H3Conn) -> None:
        self.conns.pop(conn.proto, None)
        self.endpoint.forget(conn.proto)

    def _stats(self) -> None:
        state = self.state
        if state.collector is not None:
            state.collector.emit(WorkerStats(
                slot=self.slot, generation=state.generation,
                connections=len(self.conns), in_flight=len(state.tasks),
                requests=state.total_requests))
        self.loop.call_later(STATS_INTERVAL, self._stats)


def h3_process_main(config: Config, sock: socket.socket, slot: int, generation: int,
                    conn: Connection) -> None:
    """Entry point of a spawned HTTP/3 worker process (process mode): imports the app fresh,
    reports ``("ready",)`` or ``("failed", message, traceback)``, obeys the pipe's commands."""
    from devserve.supervision.child import send, start_child

    lock = threading.Lock()
    loaded = start_child(config, generation, conn, lock)
    app: ASGIApp = loaded.app
    worker = H3Worker(config, AppRef(app, generation), sock, slot=slot, run_lifespan=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.shutdown())

    def control() -> None:
        worker.ready.wait()
        if worker.startup_error is not None:
            send(conn, lock, ("failed", f"lifespan startup failed: {worker.startup_error}", None))
            return
        send(conn, lock, ("ready",))
        while True:
            try:
                command = conn.recv()
            except (EOFError, OSError):
                worker.shutdown()
                return
            if command in ("drain", "shutdown"):
                worker.shutdown()
            elif command == "force":
                worker.force_stop()
            elif isinstance(command, tuple) and command[0] == "grace":
                worker.grace = float(command[1])

    threading.Thread(target=control, name="devserve-h3-control", daemon=True).start()
    worker.run()
