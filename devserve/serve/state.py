"""Per-worker state shared by all of its connections (one event loop, so no locks)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from devserve.asgi.scope import TrustedProxies, socket_address
from devserve.asgi.types import ASGIApp
from devserve.config import Config
from devserve.lifecycle import LifecycleCollector, RequestCompleted
from devserve.serve.admission import Headers, Limits, Verdict, admit
from devserve.serve.responses import for_verdict

if TYPE_CHECKING:
    from devserve.asgi.cycle import HTTPCycle

access_logger = logging.getLogger("devserve.access")

LINGER = 2.0  # seconds a closing connection keeps reading (and discarding) before it is cut
LINGER_BYTES = 1 << 20  # ... and at most this much: a client flooding a closing connection is cut


def shut_write(transport: Any) -> bool:
    """Close a connection without an RST: send FIN (``write_eof``) and keep reading, so bytes
    the client sent meanwhile are read and discarded instead of making the kernel answer them
    with a reset (which can destroy the response still on its way). The transport closes on the
    client's EOF; the caller cuts it after :data:`LINGER` (:func:`cut`). True when
    lingering; False when closed at once (TLS: ``close()`` sends close_notify itself)."""
    if transport.is_closing():
        return False
    if not transport.can_write_eof():
        transport.close()
        return False
    try:
        transport.write_eof()
        transport.resume_reading()
    except (OSError, RuntimeError):
        transport.abort()
        return False
    return True


def cut(transport: Any) -> None:
    """A lingering connection's client never closed its side: cut it now."""
    if not transport.is_closing():
        transport.abort()


def detach_transport_socket(transport: Any) -> socket.socket | None:
    """Take a connection's socket away from its event loop (reload handoff): dup the fd, then
    abort the transport; the kernel connection lives on in the dup, so nothing the client
    sends meanwhile is lost. None for TLS (the session state cannot move) and while written
    bytes are still buffered (an abort would drop them)."""
    raw = transport.get_extra_info("socket")
    if raw is None or transport.get_extra_info("sslcontext") is not None:
        return None
    if transport.get_write_buffer_size():
        return None  # the end of a response is still on its way: aborting would drop it
    try:
        sock = socket.socket(fileno=os.dup(raw.fileno()))
    except OSError:
        return None
    transport.abort()
    return sock


class Connection:
    """What a worker needs from any connection to drain or stop it."""

    transport: Any = None

    def start_draining(self) -> None:
        """Finish the current request, then close; close now if idle."""
        raise NotImplementedError

    def force_close(self) -> None:
        raise NotImplementedError

    def check_timeouts(self, now: float) -> None:
        """Enforce idle/header deadlines; *now* is the loop's clock."""

    def detach_if_idle(self) -> socket.socket | None:
        """The raw socket of an idle connection, detached for another loop; else None."""
        return None

    def abort_now(self) -> None:
        """The worker's loop is about to close: end the transport whatever its state (a
        forced close still flushing to a client that stopped reading keeps it open)."""
        if self.transport is not None:
            self.transport.abort()


class TCPConnection(asyncio.Protocol, Connection):
    """An accepted TCP connection that speaks HTTP itself (``H1Protocol``, ``H2Protocol``): its
    transport, addresses and scheme, in the worker's connection set from ``connection_made``."""

    def __init__(self, state: WorkerState, loop: asyncio.AbstractEventLoop, scheme: str) -> None:
        self.state = state
        self.loop = loop
        self.scheme = scheme
        self.transport: asyncio.Transport | None = None
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.client_str = ""
        self.closing = False
        self.linger_deadline: float | None = None  # closing gracefully: cut it then
        self._discarded = 0

    def close_gracefully(self) -> None:
        """FIN now, read and discard until the client's EOF (:func:`shut_write`); the sweep
        cuts it after :data:`LINGER` (:meth:`check_linger`)."""
        if self.transport is not None and shut_write(self.transport):
            self.linger_deadline = self.loop.time() + LINGER

    def end_lingering(self) -> None:
        """A forced close of a connection already closing gracefully: cut it now (a worker
        whose loop ends must not leave a transport waiting for the client's EOF)."""
        if self.linger_deadline is not None and self.transport is not None:
            self.linger_deadline = None
            cut(self.transport)

    def discard(self, data: bytes) -> None:
        """Bytes read while closing: dropped; past :data:`LINGER_BYTES` the client is
        flooding a connection that will never answer it again, and is cut."""
        self._discarded += len(data)
        if self._discarded > LINGER_BYTES and self.transport is not None:
            self.linger_deadline = None
            cut(self.transport)

    def check_linger(self, now: float) -> None:
        if (self.linger_deadline is not None and now >= self.linger_deadline
                and self.transport is not None):
            self.linger_deadline = None
            cut(self.transport)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.state.connections.add(self)
        self.server = socket_address(transport.get_extra_info("sockname"))
        self.client = socket_address(transport.get_extra_info("peername"))
        self.client_str = f"{self.client[0]}:{self.client[1]}" if self.client else ""
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"


class WorkerState:
    """Config-derived values computed once, plus the live connection set and counters."""

    def __init__(
        self,
        config: Config,
        app: ASGIApp,
        *,
        slot: int = 0,
        generation: int = 0,
        collector: LifecycleCollector | None = None,
    ) -> None:
        self.config = config
        self.app = app
        self.slot = slot
        self.generation = generation
        self.collector = collector
        self.lifespan_state: dict[str, Any] | None = None
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.total_requests = 0
        self.draining = False  # drain (reload or stop): every response closes its connection
        self.shutting_down = False  # the drain is a stop (WebSocket 1001, no hand-over)
        self.unhealthy = False  # --shutdown-delay: the health endpoint answers 503, all else runs
        # Thread-mode reload: where idle connections of a draining worker go (the new gen).
        self.handoff: Callable[[socket.socket], None] | None = None
        self.trusted = TrustedProxies(config.forwarded_allow_ips) if config.proxy_headers else None
        self.access_log = config.access_log and access_logger.isEnabledFor(logging.INFO)
        self.root_path = config.root_path
        self.limits = Limits.from_config(config)  # what admission.admit() reads
        self.limit_max_requests = config.limit_max_requests
        self.max_requests_reached: asyncio.Event | None = None
        self._static_headers: list[tuple[bytes, bytes]] = []
        if config.server_header:
            self._static_headers.append((b"server", b"devserve"))
        for name, value in config.headers:
            self._static_headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        if config.http3 and config.http3_port:
            # Every HTTP/1.1 and HTTP/2 response tells clients where HTTP/3 is (RFC 7838).
            alt_svc = f'h3=":{config.http3_port}"; ma=86400'
            self._static_headers.append((b"alt-svc", alt_svc.encode("ascii")))
        self._date_header = config.date_header
        self._date_second = 0
        self._headers: list[tuple[bytes, bytes]] = list(self._static_headers)

    def default_headers(self) -> list[tuple[bytes, bytes]]:
        """Server, Date (cached per second) and ``--header`` values for each response."""
        if not self._date_header:
            return self._static_headers
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            date = formatdate(now, usegmt=True).encode("ascii")
            self._headers = [(b"date", date), *self._static_headers]
        return self._headers

    @property
    def healthy(self) -> bool:
        """What the health endpoint says: False from the shutdown delay on, and while draining."""
        return not (self.unhealthy or self.draining or self.shutting_down)

    def admit(self, path: str, headers: Headers, *, closing: bool = False) -> Verdict:
        """:func:`~devserve.serve.admission.admit` with this worker's limits and state.
        *closing* is the worker's own stop flag where it has one (HTTP/3). Connections counted
        are this worker's TCP ones: an HTTP/3 worker has none, its endpoint caps QUIC
        connections itself."""
        return admit(self.limits, path, headers, unhealthy=closing or not self.healthy,
                     connections=len(self.connections), in_flight=len(self.tasks))

    def start_cycle(self, loop: asyncio.AbstractEventLoop, cycle: HTTPCycle, verdict: Verdict,
                    app: ASGIApp) -> asyncio.Task[None]:
        """Run *cycle* with *app* when admitted, else with the server's own answer. Admitted
        work joins :attr:`tasks`, which a drain waits for; a refusal (503) is not work."""
        task = loop.create_task(cycle.run(app if verdict is Verdict.APP
                                          else for_verdict(verdict).asgi))
        if verdict.is_work:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return task

    def request_done(self, cycle: HTTPCycle, http_version: str, client: str) -> None:
        """Access log line and RequestCompleted event for one finished request."""
        self.total_requests += 1
        scope = cycle.scope
        if self.access_log:
            qs = scope["query_string"]
            path = scope["path"] + ("?" + qs.decode("latin-1") if qs else "")
            access_logger.info(
                '%s - "%s %s HTTP/%s" %d', client, scope["method"], path, http_version,
                cycle.status,
            )
        if self.collector is not None:
            self.collector.emit(
                RequestCompleted(
                    slot=self.slot,
                    generation=self.generation,
                    method=scope["method"],
                    path=scope["path"],
                    status=cycle.status,
                    duration=time.perf_counter() - cycle.start_time,
                    http_version=http_version,
                    client=client,
                )
            )
        if (
            self.limit_max_requests is not None
            and self.total_requests >= self.limit_max_requests
            and self.max_requests_reached is not None
        ):
            self.max_requests_reached.set()
