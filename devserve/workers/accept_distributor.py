"""AcceptDistributor: one thread accepts connections and parks idle keep-alive ones in a
selector; SyncWorker threads take connections that have a request waiting from a bounded queue.

Why this shape:
- A blocking thread must never sit on an idle keep-alive connection (ten idle browsers would
  otherwise pin ten threads). After each response a worker hands the connection back here; the
  selector queues it again when bytes arrive, for whichever SyncWorker thread is free.
- The queue is bounded for *new* connections: when it is full the client gets ``503`` with
  ``Retry-After`` and ``Connection: close`` at once instead of waiting in an unbounded line.
  A parked connection that becomes readable is always queued (it is already being served).
- This thread never blocks on a peer: TLS handshakes happen on the worker thread that takes
  the connection (with a timeout); a 503 is one small non-blocking send followed by a
  lingering close (read and discard until EOF) so the client sees the answer, not a reset.
  Every connection a worker closes lingers here the same way (:meth:`close_gracefully`).
- In thread mode one distributor serves every generation: a reload only changes which
  SyncWorkers take from the queue, so nothing is dropped while generations overlap.
- Stopping: :meth:`stop_accepting` closes its listener fd — when it is the last one open,
  after accepting what the kernel still queues (a queued connection would be reset by the
  close). Draining (a reload in process mode, or the stop) serves what parked connections
  still send within a short grace, then closes them gracefully.

The connection that travels through the queue (:class:`SyncConnection`) and the blocking
request path that serves it live in ``devserve/serve/`` (``blocking_conn.py``, ``blocking_h1.py``).
"""

from __future__ import annotations

import collections
import logging
import selectors
import socket
import ssl
import threading
import time

from devserve.serve import responses
from devserve.serve.blocking_conn import SyncConnection

logger = logging.getLogger("devserve.error")

UNAVAILABLE = responses.UNAVAILABLE.http11()  # the same 503 every driver answers
LINGER = 2.0  # seconds a rejected connection may take to close its side after our 503
DRAIN_IDLE_CLOSE = 0.5  # draining: an idle connection may still send one request this long
ACCEPT_BURST = 64  # accepts per selector wake-up, so parked connections are not starved


class ConnectionQueue:
    """Connections with a request waiting. ``offer`` (new connections) respects the capacity,
    counting only new connections waiting; ``put`` (parked connections that became readable,
    e.g. 200 keep-alive clients closing at once) always succeeds and never crowds new ones
    out."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: collections.deque[tuple[SyncConnection, bool]] = collections.deque()
        self._new = 0  # how many queued items came through offer()
        self._cond = threading.Condition()

    def offer(self, conn: SyncConnection) -> bool:
        with self._cond:
            if self._new >= self.capacity:
                return False
            self._items.append((conn, True))
            self._new += 1
            self._cond.notify()
            return True

    def put(self, conn: SyncConnection) -> None:
        with self._cond:
            self._items.append((conn, False))
            self._cond.notify()

    def get(self, timeout: float) -> SyncConnection | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            conn, is_new = self._items.popleft()
            if is_new:
                self._new -= 1
            return conn

    def wake_all(self) -> None:
        """Wake every thread waiting in :meth:`get` (a draining generation's threads exit at
        once instead of when their wait times out)."""
        with self._cond:
            self._cond.notify_all()

    def drain(self) -> list[SyncConnection]:
        with self._cond:
            items = [conn for conn, _ in self._items]
            self._items.clear()
            self._new = 0
            return items

    def __len__(self) -> int:
        return len(self._items)


class AcceptDistributor:
    """Accepts on *listener* (a ``dup()`` or inherited socket) from its own thread."""

    def __init__(self, listener: socket.socket, *, capacity: int, keep_alive_timeout: float,
                 tls: bool = False, name: str = "devserve-accept") -> None:
        self._listener: socket.socket | None = listener
        self.queue = ConnectionQueue(capacity)
        self._keep_alive = keep_alive_timeout
        self._tls = tls
        self._name = name
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._lock = threading.Lock()
        self._incoming: list[SyncConnection] = []
        self._closing: list[socket.socket] = []  # closed by a worker: linger here
        self._stop_accepting: list[tuple[bool, threading.Event]] = []
        self._idle: set[SyncConnection] = set()
        self._lingering: dict[socket.socket, float] = {}
        self._mode = "running"  # running | draining | closed
        self._drain_deadline = 0.0
        self._thread: threading.Thread | None = None

    # -- control (any thread) --------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        listener = self._listener
        assert listener is not None
        listener.setblocking(False)
        self._sel.register(listener, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def get(self, timeout: float) -> SyncConnection | None:
        """The next connection with a request waiting, or None after *timeout*."""
        return self.queue.get(timeout)

    def release(self, conn: SyncConnection) -> None:
        """Park an idle keep-alive connection until the client sends again."""
        if conn.has_pending() and self._mode != "closed":
            self.queue.put(conn)
            return
        with self._lock:
            if self._mode == "closed":
                conn.close()
                return
            self._incoming.append(conn)
        self._wake()

    def adopt(self, sock: socket.socket) -> None:
        """An idle connection handed over by another worker (e.g. an async generation)."""
        sock.setblocking(True)
        self.release(SyncConnection(sock))

    def close_gracefully(self, conn: SyncConnection) -> None:
        """A worker is done with *conn*: FIN now, then read and discard here until the
        client's EOF (or ``LINGER``), so unread request bytes never turn into a reset. TLS
        connections just close (``shutdown`` would skip close_notify)."""
        if conn.needs_handshake:
            conn.close()
            return
        if not _shut_write(conn):
            return
        sock = conn.sock
        with self._lock:
            handed = self._mode != "closed"
            if handed:
                self._closing.append(sock)
        if handed:
            self._wake()
        else:
            conn.close()

    def stop_accepting(self, backlog: bool) -> threading.Event:
        """Close the listener fd this distributor holds; set the returned event once it is
        closed. *backlog*: it is the last open fd of the listener (the caller closed the
        others), so first accept and queue what the kernel still holds — closing the last fd
        resets queued connections, and from then on new ones are refused."""
        done = threading.Event()
        with self._lock:
            running = self._thread is not None and self._mode != "closed"
            if running:
                self._stop_accepting.append((backlog, done))
        if running:
            self._wake()
        else:
            self._close_listener(backlog=False)  # nobody would serve what it accepted
            done.set()
        return done

    def start_draining(self) -> None:
        """Stop accepting (a reload: the Supervisor keeps the listener open; a stop: it was
        closed already); idle connections get ``DRAIN_IDLE_CLOSE`` seconds to send one last
        request — answered, with ``Connection: close`` — then close gracefully."""
        with self._lock:
            if self._mode != "running":
                return
            self._mode = "draining"
            self._drain_deadline = time.monotonic() + DRAIN_IDLE_CLOSE
        self._wake()

    @property
    def idle_count(self) -> int:
        return len(self._idle) + len(self._incoming)

    def quiet(self) -> bool:
        """Nothing left for workers: no queued connection and (draining) none parked."""
        if len(self.queue):
            return False
        return self._mode != "draining" or self.idle_count == 0

    def close(self, timeout: float = LINGER + 1.0) -> None:
        """Stop the thread (once lingering connections closed, within ``LINGER``) and close
        the listener dup and every connection still held."""
        with self._lock:
            if self._mode == "closed":
                return
            self._mode = "closed"
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self._close_all()  # never started (e.g. the app failed to start)
        for conn in self.queue.drain():
            conn.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # buffer full: a wake-up is pending anyway

    # -- the distributor thread ------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._mode != "closed" or self._lingering:
                for key, _ in self._sel.select(self._next_timeout()):
                    data = key.data
                    if data == "listen":
                        self._accept()
                    elif data == "wake":
                        self._drain_wake()
                    elif data == "linger":
                        self._linger_read(key.fileobj)  # type: ignore[arg-type]
                    elif isinstance(data, SyncConnection):
                        self._on_readable(data)
                self._take_incoming()
                self._sweep(time.monotonic())
        except Exception:
            logger.exception("the accept distributor failed")
        finally:
            self._close_all()

    def _next_timeout(self) -> float:
        return 0.1 if (self._idle or self._lingering or self._mode != "running") else 0.5

    def _accept(self, limit: int | None = ACCEPT_BURST) -> None:
        """Accept up to *limit* connections (None: until the kernel has none queued)."""
        listener = self._listener
        count = 0
        while listener is not None and (limit is None or count < limit):
            count += 1
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.error("accept failed: %s", exc)
                return
            sock.setblocking(True)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = SyncConnection(sock, needs_handshake=self._tls)
            if not self.queue.offer(conn):
                self._reject(conn)

    def _close_listener(self, *, backlog: bool) -> None:
        """Close the listener fd (after accepting its backlog, see :meth:`stop_accepting`)."""
        listener = self._listener
        if listener is None:
            return
        try:
            self._sel.unregister(listener)
        except (KeyError, ValueError):
            pass
        if backlog:
            self._accept(limit=None)
        self._listener = None
        listener.close()

    def _reject(self, conn: SyncConnection) -> None:
        """503 + lingering close (TLS connections are just closed: no handshake here)."""
        sock = conn.sock
        if conn.needs_handshake or isinstance(sock, ssl.SSLSocket):
            conn.close()
            return
        try:
            sock.setblocking(False)
            sock.send(UNAVAILABLE)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
            return
        self._linger(sock)

    def _linger(self, sock: socket.socket) -> None:
        """Read and discard until EOF or ``LINGER`` seconds, then close (our FIN is out)."""
        try:
            sock.setblocking(False)
            self._sel.register(sock, selectors.EVENT_READ, "linger")
        except (OSError, ValueError, KeyError):
            sock.close()
            return
        self._lingering[sock] = time.monotonic() + LINGER

    def _linger_read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._unlinger(sock)

    def _unlinger(self, sock: socket.socket) -> None:
        self._lingering.pop(sock, None)
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        with self._lock:
            requests, self._stop_accepting = self._stop_accepting, []
        for backlog, done in requests:
            self._close_listener(backlog=backlog)
            done.set()
        if self._mode != "running":
            # Draining for a reload: the Supervisor keeps the listener open, so what is
            # queued waits for the next generation. Closed: nothing will serve any more.
            self._close_listener(backlog=False)
        if self._mode == "closed":
            for conn in list(self._idle):
                self._close_idle(conn)

    def _take_incoming(self) -> None:
        with self._lock:
            incoming, self._incoming = self._incoming, []
            closing, self._closing = self._closing, []
        for sock in closing:
            self._linger(sock)
        deadline = time.monotonic() + self._keep_alive
        for conn in incoming:
            if conn.has_pending():
                self._on_ready(conn)
                continue
            conn.idle_deadline = deadline
            try:
                self._sel.register(conn.sock, selectors.EVENT_READ, conn)
            except (OSError, ValueError, KeyError):
                conn.close()
                continue
            self._idle.add(conn)

    def _on_readable(self, conn: SyncConnection) -> None:
        self._idle.discard(conn)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        self._on_ready(conn)

    def _on_ready(self, conn: SyncConnection) -> None:
        if self._mode == "closed":
            conn.close()
        else:
            self.queue.put(conn)

    def _sweep(self, now: float) -> None:
        draining_over = self._mode == "draining" and now >= self._drain_deadline
        for conn in [c for c in self._idle if draining_over or now >= c.idle_deadline]:
            self._close_idle(conn)
        for sock in [s for s, t in self._lingering.items() if now >= t]:
            self._unlinger(sock)

    def _close_idle(self, conn: SyncConnection) -> None:
        """A parked connection's time is up: close it gracefully (it may hold a request that
        is only arriving now)."""
        self._idle.discard(conn)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        if _shut_write(conn):
            self._linger(conn.sock)

    def _close_all(self) -> None:
        for conn in list(self._idle):
            conn.close()
        self._idle.clear()
        with self._lock:
            incoming, self._incoming = self._incoming, []
            closing, self._closing = self._closing, []
            requests, self._stop_accepting = self._stop_accepting, []
        for conn in incoming:
            conn.close()
        for sock in closing:
            sock.close()
        for sock in list(self._lingering):
            self._unlinger(sock)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for _, done in requests:
            done.set()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()


def _shut_write(conn: SyncConnection) -> bool:
    """Send FIN on *conn* (plain TCP); False when it was closed instead (TLS: ``shutdown`` would
    skip close_notify; or the socket is gone already)."""
    sock = conn.sock
    if isinstance(sock, ssl.SSLSocket):
        conn.close()
        return False
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        conn.close()
        return False
    return True
