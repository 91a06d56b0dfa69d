"""The first two steps of a stop, before the workers drain (``Generations.stop_all``).

1. **Shutdown delay** (``--shutdown-delay D``; SIGTERM and ``shutdown()``, not SIGINT): every
   worker's health endpoint answers 503 at once while everything else is served normally for D
   seconds, so load balancers and Kubernetes endpoints stop routing here while this instance
   still answers whatever they send meanwhile. A SIGINT or a forced stop cuts it short.
2. **Stop accepting**, so that a late client is *refused* (ECONNREFUSED: nothing was sent, a
   client or a balancer retries elsewhere) and never accepted and then reset. The kernel keeps
   a listening socket listening while any fd of it is open — the Supervisor's own, each thread
   worker's ``dup()``, each process child's inherited copy, the sync AcceptDistributor's — and
   resets the connections still queued in its backlog when the last one closes. So, in order:
   the Supervisor closes its own fds; every worker but one closes its fd and acknowledges; then
   the last one, alone holding the listener, accepts what is still queued (until EAGAIN),
   closes the last fd, and serves those connections like any other during the drain.

Why the workers and not the Supervisor take the backlog: in process mode only a child can serve
a connection (handing sockets to children would need fd passing), and one scheme for both modes
keeps one code path; thread workers do it on their own loop (``Worker.stop_accepting``).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable

from devserve.lifecycle import Event, ShutdownPhase
from devserve.supervision.handles import _H3WorkerHandle, _WorkerHandle
from devserve.supervision.signals import StopRequest

ACK_TIMEOUT = 5.0  # longest wait for one worker to close its listener fd


def shutdown_delay(handles: Iterable[_WorkerHandle | _H3WorkerHandle], seconds: float,
                   stop: StopRequest, emit: Callable[[Event], None]) -> None:
    """Step 1: health 503 in every worker, everything else served, for *seconds*."""
    if seconds <= 0 or stop.undelayed:
        return
    for handle in handles:
        handle.mark_unhealthy()
    emit(ShutdownPhase(phase="delay", seconds=seconds))
    stop.wait_delay(seconds)


def stop_accepting(sockets: Iterable[socket.socket], handles: list[_WorkerHandle]) -> None:
    """Step 2: close the listener so that new connections are refused, none reset."""
    for sock in sockets:
        try:
            sock.close()
        except OSError:
            pass
    live = [h for h in handles if h.is_alive()]
    if not live:
        return
    *others, last = live
    _wait_closed([(h, h.stop_accepting(False)) for h in others])
    _wait_closed([(last, last.stop_accepting(True))])


def _wait_closed(waits: list[tuple[_WorkerHandle, threading.Event]]) -> None:
    """Until each worker reported its listener fd closed, or died (the kernel closed it), or
    ``ACK_TIMEOUT`` passed (then the drain goes on: nothing here may hang the stop)."""
    deadline = time.monotonic() + ACK_TIMEOUT
    for handle, done in waits:
        while not done.wait(0.05):
            if not handle.is_alive() or time.monotonic() > deadline:
                break
