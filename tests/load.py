"""Keep-alive HTTP/1.1 load clients that classify every failure, for shutdown and rolling-restart
tests (and the deploy benchmark).

Each client is a thread with one blocking socket and an h11 client connection: it sends GETs back
to back, reconnects after a ``Connection: close``, and records what happened to every request it
*sent*: a complete 200, another status, a reset, or the connection ending before the response (EOF).
A refused connect is not a lost request — nothing was sent — and is counted on its own; a client
may stop at its first refusal (the server is gone) or keep retrying (a balancer in front).
Counts and time are bounded by the caller's stop event and the per-request timeout.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import h11


@dataclass
class Tally:
    """What happened to the requests of every client, merged."""

    ok: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    resets: int = 0
    eofs: int = 0  # the connection ended after the request was sent, before a full response
    timeouts: int = 0
    refused: int = 0  # connects refused: nothing sent, nothing lost
    closes: int = 0  # responses that carried Connection: close
    errors: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Requests sent and not answered 200."""
        return sum(self.statuses.values()) + self.resets + self.eofs + self.timeouts

    def merge(self, other: Tally) -> None:
        self.ok += other.ok
        self.statuses.update(other.statuses)
        self.resets += other.resets
        self.eofs += other.eofs
        self.timeouts += other.timeouts
        self.refused += other.refused
        self.closes += other.closes
        self.errors.extend(other.errors[:5])

    def summary(self) -> str:
        return (f"ok={self.ok} non-200={dict(self.statuses)} resets={self.resets} "
                f"eofs={self.eofs} timeouts={self.timeouts} refused={self.refused} "
                f"closes={self.closes} errors={self.errors[:3]}")


class _Outcome(Exception):
    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail


def _exchange(sock: socket.socket, conn: h11.Connection, host: str, path: str
              ) -> tuple[int, bool]:
    """One request/response; returns (status, keep_alive). Raises _Outcome on a failure."""
    request = h11.Request(method="GET", target=path, headers=[("Host", host)])
    try:
        sock.sendall(conn.send(request) + conn.send(h11.EndOfMessage()))
    except (BrokenPipeError, ConnectionResetError) as exc:
        raise _Outcome("reset", repr(exc)) from None
    status = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise _Outcome("timeout") from None
            except ConnectionResetError as exc:
                raise _Outcome("reset", repr(exc)) from None
            if not data:
                raise _Outcome("eof")
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.EndOfMessage):
            break
        elif isinstance(event, h11.ConnectionClosed):
            raise _Outcome("eof")
    keep = conn.our_state is h11.DONE and conn.their_state is h11.DONE
    if keep:
        conn.start_next_cycle()
    return status, keep


def connect_refused(host: str, port: int, timeout: float = 5.0) -> bool:
    """One fresh connect: True when it is refused (the listener is closed), False when it is
    accepted (closed again at once, nothing sent). Anything else (a reset, a timeout) raises:
    a server that stops accepting must refuse, never accept and then drop."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        return True
    sock.close()
    return False


class LoadClients:
    """*count* clients hammering ``host:port`` + *path* until :meth:`stop` (or, with
    ``stop_when_refused``, until each one's connect is refused)."""

    def __init__(self, host: str, port: int, count: int, *, path: str = "/",
                 stop_when_refused: bool = False, timeout: float = 10.0) -> None:
        self.host, self.port, self.path = host, port, path
        self.stop_when_refused = stop_when_refused
        self.timeout = timeout
        self._stop = threading.Event()
        self._tallies = [Tally() for _ in range(count)]
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True)
                         for t in self._tallies]
        self._started = threading.Barrier(count + 1)

    def start(self) -> LoadClients:
        for thread in self._threads:
            thread.start()
        self._started.wait(self.timeout)
        return self

    def sent(self) -> int:
        return sum(t.ok + t.lost for t in self._tallies)

    def stop(self, timeout: float = 30.0) -> Tally:
        self._stop.set()
        return self.join(timeout)

    def join(self, timeout: float = 30.0) -> Tally:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = sum(thread.is_alive() for thread in self._threads)
        total = Tally()
        for tally in self._tallies:
            total.merge(tally)
        if alive:
            total.errors.append(f"{alive} client(s) still running")
        return total

    def _run(self, tally: Tally) -> None:
        first = True
        while not self._stop.is_set():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            except ConnectionRefusedError:
                tally.refused += 1
                if self.stop_when_refused:
                    break
                time.sleep(0.01)  # pacing of a client retrying a refused connect
                continue
            except OSError as exc:
                tally.errors.append(repr(exc))
                break
            finally:
                if first:
                    first = False
                    self._started.wait(self.timeout)
            with sock:
                self._serve_connection(sock, tally)

    def _serve_connection(self, sock: socket.socket, tally: Tally) -> None:
        conn = h11.Connection(h11.CLIENT)
        while not self._stop.is_set():
            try:
                status, keep = _exchange(sock, conn, self.host, self.path)
            except _Outcome as outcome:
                if outcome.kind == "reset":
                    tally.resets += 1
                elif outcome.kind == "eof":
                    tally.eofs += 1
                else:
                    tally.timeouts += 1
                if outcome.detail:
                    tally.errors.append(outcome.detail)
                return
            except h11.RemoteProtocolError as exc:
                tally.errors.append(repr(exc))
                tally.statuses[-1] += 1
                return
            if status == 200:
                tally.ok += 1
            else:
                tally.statuses[status] += 1
            if not keep:
                tally.closes += 1
                return
