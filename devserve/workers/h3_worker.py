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
import socket
from typing import Any

from devserve.config import Config
from devserve.lifecycle import LifecycleCollector
from devserve.net.tls import cache_dir, ensure_dev_certificate
from devserve.protocols.http3 import H3Endpoint, server_configuration
from devserve.serve.h3 import AppRef, H3Conn
from devserve.serve.state import WorkerState
from devserve.workers.base import LoopWorker


def quic_configuration(config: Config) -> Any:
    """QUIC settings from *config*: the same certificate as TCP (``--https`` dev cert too)."""
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


class H3Worker(LoopWorker):
    """Serves HTTP/3 on one UDP socket from its own event loop. A reload and a shutdown drain
    alike: GOAWAY, in-flight streams finish within ``grace``, then every connection closes."""

    def __init__(self, config: Config, app_ref: AppRef, sock: socket.socket, *,
                 slot: int = 0, collector: LifecycleCollector | None = None,
                 run_lifespan: bool = False) -> None:
        # run_lifespan: process mode, where this child owns its app's lifespan.
        super().__init__(
            config,
            WorkerState(config, app_ref.app, slot=slot, generation=app_ref.generation,
                        collector=collector),
            run_lifespan=run_lifespan,
        )
        self.sock = sock
        self.app_ref = app_ref
        self.endpoint = H3Endpoint(
            quic_configuration(config),
            max_connections=config.limit_concurrency or 1000,
            max_streams=config.h2_max_concurrent_streams,
        )
        name = sock.getsockname()
        self.server: tuple[str, int] = (str(name[0]), int(name[1]))
        self.closing = False
        self.conns: dict[Any, H3Conn] = {}
        self._transport: asyncio.DatagramTransport | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The worker's running loop (connections schedule their timers on it)."""
        assert self._loop is not None
        return self._loop

    def set_lifespan_state(self, state: dict[str, Any]) -> None:
        self.app_ref.lifespan_state = state  # new streams take it from the AppRef

    # -- LoopWorker hooks ------------------------------------------------------------------
    async def _open(self) -> None:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Datagrams(self), sock=self.sock)
        self._transport = transport

    async def _close(self) -> None:
        self.closing = True
        self.endpoint.accepting = False
        for conn in list(self.conns.values()):
            conn.goaway()
        await self._drain(lambda: not self.state.tasks)
        for conn in list(self.conns.values()):
            conn.close()
        await self._settle_tasks()
        if self._transport is not None:
            self._transport.close()

    def _gauges(self) -> tuple[int, int, int]:
        state = self.state
        return len(self.conns), len(state.tasks), state.total_requests

    # -- datagrams (the loop side) ---------------------------------------------------------
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
