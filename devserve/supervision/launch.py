"""Starting workers: a thread launcher and a process launcher behind one :class:`Launcher`.

- Threads: each async worker gets a ``dup()`` of the listener and the generation's app object;
  SyncWorkers (WSGI, ``--execution sync``) share one AcceptDistributor and AsyncPool that
  outlive generations, so a reload never stops accepting. HTTP/3 workers are threads that
  outlive generations too (they serve each new stream with the current ``AppRef``).
- Processes: children import the app fresh, forked from a pre-warmed process template on
  Linux (libraries already imported, no project code: :mod:`.template` picks fork or
  ``spawn``); they inherit the listener and talk through :mod:`.ipc`. When a live display owns
  the terminal, their output is relayed to ``output_sink`` line by line.

Everything mode-specific about *starting* a worker lives here; the rest of the Supervisor
works with handles only.
"""

from __future__ import annotations

import logging
import multiprocessing
import socket
import ssl
import sys
import threading
import traceback
from typing import Any, Literal, Protocol

from devserve.asgi.lifespan import LifespanFailed
from devserve.asgi.types import ASGIApp
from devserve.config import Config
from devserve.errors import DevserveError
from devserve.reload.importer import user_traceback
from devserve.serve.h3 import AppRef
from devserve.supervision.child import h3_process_main, process_main
from devserve.supervision.handles import _H3WorkerHandle, _Handle, _WorkerHandle
from devserve.supervision.ipc import Channel, ChildMessage, Forward, LibraryModules, read_messages
from devserve.supervision.options import SupervisorOptions
from devserve.supervision.prewarm import library_modules
from devserve.supervision.template import Templates
from devserve.workers.accept_distributor import AcceptDistributor
from devserve.workers.async_pool import AsyncPool
from devserve.workers.base import TCPWorker
from devserve.workers.h3_worker import H3Worker
from devserve.workers.sync_worker import SyncWorker, queue_capacity
from devserve.workers.worker import Worker

logger = logging.getLogger("devserve.error")

LifespanState = dict[str, Any]
WorkerMode = Literal["thread", "process"]


def gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def choose_mode(config: Config, *, app_is_object: bool, reload: bool = False
                ) -> tuple[WorkerMode, str]:
    """Pick thread or process workers and say why (shown in the banner)."""
    if config.worker_mode != "auto":
        if config.worker_mode == "process" and app_is_object:
            raise DevserveError(
                "--worker-mode process needs the app as an import string",
                hint="pass 'module:attr' instead of an app object",
            )
        return config.worker_mode, "chosen with --worker-mode"
    if app_is_object:
        return "thread", "the app was passed as an object (processes need an import string)"
    if not gil_enabled():
        return "thread", "the interpreter runs without the GIL"
    if reload and config.workers == 1:
        return "thread", "--reload with one worker re-imports in-process"
    return "process", "the GIL is enabled, so processes give parallelism"


class Launcher(Protocol):
    """Starts the workers of one mode; the Supervisor never branches on the mode itself."""

    mode: WorkerMode
    reload_strategy: str  # how a graceful reload gets new code: "reimport" | "process-roll"
    in_process: bool  # workers share this process's app objects (re-imported on reload)
    shares_lifespan: bool  # slot 0 runs lifespan; the other slots share its state

    def open(self, sockets: list[socket.socket], udp_sockets: list[socket.socket]) -> None:
        """Before generation 1: remember the listeners, build what outlives generations."""

    def spawn(self, slot: int, generation: int, app: ASGIApp | None, *, run_lifespan: bool,
              state: LifespanState | None, preload: tuple[str, ...] = ()) -> _WorkerHandle:
        """Start the worker of *slot* in *generation*; readiness is reported on the handle.
        *preload*: process mode, project modules to import before reporting ready."""

    def spawn_h3(self, index: int, generation: int, ref: AppRef | None) -> _H3WorkerHandle:
        """Start the HTTP/3 worker of UDP socket *index*; *ref* is the app it serves (thread
        mode; a process child imports its own)."""

    def close(self) -> None:
        """After every worker stopped: tear down what outlived the generations."""


def _forward_ready(handle: _Handle, worker: TCPWorker | H3Worker, what: str) -> None:
    """Thread mode: turn the worker's readiness into the handle's start-up outcome."""
    worker.ready.wait()
    err = worker.startup_error
    if err is None:
        handle.mark_ready()
        return
    reported = isinstance(err, LifespanFailed)  # the app said so; no traceback to show
    handle.mark_failed(f"{what}: {err}", None if reported else user_traceback(err))


def _run_thread_worker(worker: TCPWorker | H3Worker, sock: socket.socket | None) -> None:
    """A worker thread: run it, log a crash; close its ``dup()`` of the listener (a worker
    that never opened it, e.g. after a failed lifespan startup, would leak it)."""
    try:
        worker.run()
    except BaseException:
        logger.error("worker %d crashed:\n%s", worker.slot, traceback.format_exc().rstrip())
    finally:
        if sock is not None:
            sock.close()


class ThreadLauncher:
    """Workers as daemon threads of this process, sharing the app object."""

    mode: WorkerMode = "thread"
    reload_strategy = "reimport"
    in_process = True

    def __init__(self, config: Config, options: SupervisorOptions, *,
                 ssl_context: ssl.SSLContext | None, sync_interface: str | None) -> None:
        self._config = config
        self._options = options
        self._ssl_context = ssl_context
        self._sync_interface = sync_interface  # "wsgi" | "asgi" on SyncWorkers, else None
        self.shares_lifespan = config.workers > 1
        self._sockets: list[socket.socket] = []
        self._udp_sockets: list[socket.socket] = []
        self._distributor: AcceptDistributor | None = None
        self._pool: AsyncPool | None = None

    def open(self, sockets: list[socket.socket], udp_sockets: list[socket.socket]) -> None:
        self._sockets, self._udp_sockets = sockets, udp_sockets
        if self._sync_interface is not None:
            self.setup_sync_infrastructure()

    def setup_sync_infrastructure(self) -> None:
        """The AsyncPool and AcceptDistributor every SyncWorker generation shares."""
        ctx = self._ssl_context
        if ctx is not None:
            ctx.set_alpn_protocols(["http/1.1"])  # SyncWorkers speak HTTP/1.1 only
        self._pool = AsyncPool(1, loop_setting=self._config.loop)
        self._distributor = AcceptDistributor(
            self._sockets[0].dup(), capacity=queue_capacity(self._config, self._config.workers),
            keep_alive_timeout=self._config.timeout_keep_alive, tls=ctx is not None)
        self._distributor.start()

    def create_worker(self, slot: int, socket_index: int, *, generation: int, app: ASGIApp,
                      run_lifespan: bool) -> TCPWorker:
        """A SyncWorker on the shared distributor for WSGI or ``--execution sync``, else an
        async Worker on a ``dup()`` of listener *socket_index*."""
        return self._create(slot, socket_index, generation=generation, app=app,
                            run_lifespan=run_lifespan)[0]

    def _create(self, slot: int, socket_index: int, *, generation: int, app: ASGIApp,
                run_lifespan: bool) -> tuple[TCPWorker, socket.socket | None]:
        """The worker, and the listener ``dup()`` it was given (None for a SyncWorker)."""
        wrap = self._options.app_wrapper
        collector = self._options.worker_collector
        if self._sync_interface is not None:
            assert self._distributor is not None and self._pool is not None
            if wrap is not None and self._sync_interface == "asgi":
                app = wrap(app, generation)
            return SyncWorker(
                self._config, app, self._distributor, self._pool,
                interface=self._sync_interface, slot=slot, generation=generation,
                collector=collector, run_lifespan=run_lifespan, ssl_context=self._ssl_context,
            ), None
        if wrap is not None:
            app = wrap(app, generation)
        sock = self._sockets[socket_index].dup()
        return Worker(
            self._config, app, sock, slot=slot, generation=generation, collector=collector,
            run_lifespan=run_lifespan, ssl_context=self._ssl_context,
        ), sock

    def spawn(self, slot: int, generation: int, app: ASGIApp | None, *, run_lifespan: bool,
              state: LifespanState | None, preload: tuple[str, ...] = ()) -> _WorkerHandle:
        assert app is not None, "thread workers serve an app object"
        worker, sock = self._create(slot, 0, generation=generation, app=app,
                                    run_lifespan=run_lifespan)
        if state is not None:
            worker.set_lifespan_state(state)
        thread = threading.Thread(target=_run_thread_worker, args=(worker, sock),
                                  name=f"devserve-g{generation}-w{slot}", daemon=True)
        handle = _WorkerHandle(slot, thread, worker, generation)
        thread.start()
        threading.Thread(target=_forward_ready, args=(handle, worker, "lifespan startup failed"),
                         daemon=True).start()
        return handle

    def spawn_h3(self, index: int, generation: int, ref: AppRef | None) -> _H3WorkerHandle:
        assert ref is not None, "thread HTTP/3 workers serve the generation's AppRef"
        sock = self._udp_sockets[index].dup()
        worker = H3Worker(self._config, ref, sock, slot=self._config.workers + index,
                          collector=self._options.worker_collector)
        thread = threading.Thread(target=_run_thread_worker, args=(worker, sock),
                                  name=f"devserve-h3-{index}", daemon=True)
        handle = _H3WorkerHandle(index, thread, worker=worker, generation=generation)
        thread.start()
        threading.Thread(target=_forward_ready, args=(handle, worker, "HTTP/3 worker failed"),
                         daemon=True).start()
        return handle

    def close(self) -> None:
        """After every SyncWorker stopped: the distributor first, then the pool they used."""
        if self._distributor is not None:
            self._distributor.close()
        if self._pool is not None:
            self._pool.close()


class ProcessLauncher:
    """Workers as processes, forked from a template or spawned; each imports the app itself."""

    mode: WorkerMode = "process"
    reload_strategy = "process-roll"
    in_process = False
    shares_lifespan = False

    def __init__(self, config: Config, options: SupervisorOptions) -> None:
        self._config = config
        self._options = options
        self._mp = multiprocessing.get_context("spawn")
        self._templates = Templates(reload=config.reload)
        self._sockets: list[socket.socket] = []
        self._udp_sockets: list[socket.socket] = []

    def open(self, sockets: list[socket.socket], udp_sockets: list[socket.socket]) -> None:
        self._sockets, self._udp_sockets = sockets, udp_sockets
        # This process imported the app once (to check it): the first template is built from
        # its libraries now, while generation 1 starts, so the first reloads find it ready.
        self._templates.learn(library_modules())

    def spawn(self, slot: int, generation: int, app: ASGIApp | None, *, run_lifespan: bool,
              state: LifespanState | None, preload: tuple[str, ...] = ()) -> _WorkerHandle:
        parent, child = self._mp.Pipe()
        out_parent = out_child = None
        if self._options.output_sink is not None:
            out_parent, out_child = socket.socketpair()
        process = self._templates.process(
            process_main,
            (self._config, self._sockets[0], slot, generation, child,
             self._options.worker_collector is not None, True, out_child, preload),
            f"devserve-g{generation}-w{slot}")
        handle = _WorkerHandle(slot, process, None, generation, channel=Channel(parent))
        child.close()
        self._read(handle)
        if out_parent is not None and out_child is not None:
            out_child.close()
            threading.Thread(target=self._relay_output, args=(out_parent,),
                             daemon=True).start()
        return handle

    def spawn_h3(self, index: int, generation: int, ref: AppRef | None) -> _H3WorkerHandle:
        parent, child = self._mp.Pipe()
        process = self._templates.process(
            h3_process_main,
            (self._config, self._udp_sockets[index], self._config.workers + index, generation,
             child),
            f"devserve-g{generation}-h3")
        handle = _H3WorkerHandle(index, process, generation=generation,
                                 channel=Channel(parent))
        child.close()
        self._read(handle)
        return handle

    def close(self) -> None:
        """Children own everything they built; the process templates exit."""
        self._templates.close()

    def _read(self, handle: _Handle) -> None:
        """One reader thread per child: start-up reports to the handle, events onwards."""
        assert handle.channel is not None
        conn = handle.channel.conn
        collector = self._options.worker_collector
        reports = 0

        def on_message(message: ChildMessage) -> None:
            nonlocal reports
            if isinstance(message, Forward):
                if collector is not None:
                    collector.emit(message.event)
            elif isinstance(message, LibraryModules):
                # The first comes once the child is ready; later ones while the next
                # generation starts: the template is rebuilt once that one is ready.
                self._templates.learn(message.names, rebuild=reports == 0)
                reports += 1
            else:
                handle.on_child_message(message)

        def reader() -> None:
            read_messages(conn, on_message)
            handle.reader_done.set()

        threading.Thread(target=reader, name=f"devserve-pipe-{handle.ident}",
                         daemon=True).start()

    def _relay_output(self, sock: socket.socket) -> None:
        """Lines a process worker printed, handed to the display (above its live view)."""
        sink = self._options.output_sink
        with sock, sock.makefile("r", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if sink is not None:
                    sink(line.rstrip("\n"))
