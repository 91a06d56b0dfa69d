"""Composition root: config → logging → app → sockets → Supervisor, and the exit code.

Nothing imports this module except the CLI and :func:`devserve.run`; it wires the parts and owns
the order of start-up and teardown. It knows no display: the caller passes a
:data:`DisplayFactory` (the CLI builds the dashboard, plain log or JSON lines), and the display
only subscribes to events and asks for actions through :class:`Controls`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import socket
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Protocol

from devserve.asgi.types import ASGIApp
from devserve.config import Config, find_pyproject, read_env_file
from devserve.errors import ConfigError, DevserveError
from devserve.lifecycle import FanOutCollector, ServerStarting
from devserve.logs import configure_logging
from devserve.net.sockets import bind_socket, bind_with_udp, describe_address
from devserve.net.tls import create_ssl_context
from devserve.reload.frameworks import fresh_process_expected
from devserve.reload.importer import ProjectImporter, ReloadOutcome, load_app
from devserve.reload.livereload import LiveReloadHub, LiveReloadMiddleware
from devserve.reload.reloader import BROWSER_INCLUDES, Reloader
from devserve.reload.watcher import PathFilter, Watcher
from devserve.supervision.options import HandOver
from devserve.supervision.relaunch import Relaunch
from devserve.supervision.standby import CatchUp, StandbyLink
from devserve.supervisor import AppLoader, AppWrapper, Supervisor, choose_mode, gil_enabled

logger = logging.getLogger("devserve.error")


class Controls(Protocol):
    """What a display may ask of the running server (keys in the dashboard)."""

    def graceful_reload(self) -> None: ...

    def restart_workers(self) -> None: ...

    def shutdown(self) -> None: ...


class Display(Protocol):
    """A view of the lifecycle events, built before the Supervisor and started after it."""

    @property
    def wants_requests(self) -> bool:
        """Per-request events and gauges cost the workers: sent only when this is True."""

    @property
    def output_sink(self) -> Callable[[str], None] | None:
        """Where process workers' output lines go (a live view owns the terminal); None lets
        them write to the terminal directly."""

    def start(self, controls: Controls) -> None: ...

    def close(self) -> None: ...


# Builds the display for *config*, attaching its sinks to the collector.
DisplayFactory = Callable[[Config, FanOutCollector], Display]


def _start_watcher(config: Config, supervisor: Supervisor, roots: list[Path],
                   collector: FanOutCollector, on_reexec: Callable[[], None]) -> Watcher:
    """Watch *roots* (pruned) and feed change batches to a Reloader driving *supervisor*."""
    if not isinstance(config.app, str):
        raise ConfigError("--reload", "needs the app as an import string",
                          hint="pass 'module:attr' instead of an app object")
    reloader = Reloader(supervisor, config, pyproject=find_pyproject(Path.cwd()),
                        collector=collector, on_reexec=on_reexec)
    includes = (*config.reload_includes, *(BROWSER_INCLUDES if config.livereload else ()))
    watcher = Watcher(
        roots, reloader,
        path_filter=PathFilter(includes, config.reload_excludes),
        quiet_ms=int(config.reload_delay * 1000),
        force_polling=config.reload_poll,
    )
    watcher.start()
    if watcher.started.wait(10.0):
        logger.info("Watching for changes in %d director%s under %s", watcher.watch_count,
                    "y" if watcher.watch_count == 1 else "ies",
                    ", ".join(str(r) for r in roots))
    return watcher


def _app_loader(importer: ProjectImporter) -> AppLoader:
    """Thread mode reloads: re-import what the changed files affect (see reload.importer)."""
    def load(changed: Collection[Path] | None) -> ReloadOutcome:
        return importer.reload(changed)
    return load


def _livereload(collector: FanOutCollector) -> AppWrapper:
    """``--livereload``: one hub hears the lifecycle events; every generation's app is wrapped
    so pages get the script and the browser channel."""
    hub = LiveReloadHub()
    collector.add(hub)

    def wrap(app: ASGIApp, generation: int) -> ASGIApp:
        return LiveReloadMiddleware(app, hub, generation)
    return wrap


def serve(config: Config, *, display: DisplayFactory | None = None, standby: bool = False
          ) -> int:
    """Run the server described by *config* until it is stopped; return the exit code.
    Without *display* nothing shows the lifecycle events (embedding, tests). *standby*: started
    from the command line, so a fresh process running the same command line serves the same
    server: edits needing one go to a standby (``supervision.standby``), and this process may
    be one."""
    configure_logging(config)
    link = StandbyLink.from_env() if standby else None
    go = link.wait_for_go() if link is not None else None  # a standby: until an edit needs it
    relay_fd: int | None = None
    if config.env_file:
        for key, value in read_env_file(config.env_file).items():
            os.environ.setdefault(key, value)
    app_path = config.app if isinstance(config.app, str) else None
    mode, reason = choose_mode(config, app_is_object=app_path is None, reload=config.reload)
    roots = [Path(d) for d in config.reload_dirs] or [Path(config.app_dir)]
    importer = None
    if mode == "thread" and app_path is not None:
        # In-process re-imports: the import graph is recorded from the very first import.
        importer = ProjectImporter(app_path, dirs=[*roots, Path(config.app_dir)],
                                   app_dir=config.app_dir, factory=config.factory,
                                   interface=config.interface)
        try:
            loaded = importer.load(go.modules if go is not None else (), fresh=go is not None)
        except DevserveError as exc:
            if link is None:
                raise
            link.failed(exc)  # the serving process reports it and keeps serving
            importer.close()
            return exc.exit_code
        if link is not None:
            listener_fd, relay_fd = link.wait_for_listener()
            config = dataclasses.replace(config, fd=listener_fd)
    else:
        loaded = load_app(config.app, app_dir=config.app_dir, factory=config.factory,
                          interface=config.interface)
    if config.http3 and (loaded.interface == "wsgi" or config.execution == "sync"):
        raise ConfigError("--http3", "HTTP/3 is served by async workers only; this app runs on "
                          "sync workers (WSGI or --execution sync)",
                          hint="drop --http3, or serve an ASGI app with --execution async")
    ssl_context = create_ssl_context(config)
    udp_sockets: list[socket.socket] = []
    if config.http3:
        sock, udp = bind_with_udp(config)
        udp_sockets.append(udp)
        # Workers advertise the real UDP port (Alt-Svc) even when the kernel picked it.
        config = dataclasses.replace(config, http3_port=udp.getsockname()[1])
    else:
        sock = bind_socket(config)
    relaunch: Relaunch | None = None
    try:
        url = describe_address(sock, "https" if ssl_context else "http")
        collector = FanOutCollector()
        view = display(config, collector) if display is not None else None
        wrapper = _livereload(collector) if config.livereload else None
        relaunch = Relaunch(config, sock,
                            lambda why: supervisor.shutdown(delay=False, reason=why),
                            standby=standby, relay_fd=relay_fd,
                            successor=link.successor if link is not None else None)
        wsgi = loaded.interface == "wsgi"  # served by SyncWorker threads (sync_worker.py)
        supervisor = Supervisor(
            config, None if wsgi else loaded.app, mode=mode, ssl_context=ssl_context,
            app_path=app_path, lifecycle_collector=collector,
            sync_app=loaded.app if wsgi else None,
            app_loader=_app_loader(importer) if importer is not None else None,
            app_wrapper=wrapper, output_sink=view.output_sink if view is not None else None,
            worker_collector=collector if view is not None and view.wants_requests else None,
            fresh_start=relaunch if importer is not None else None,
            handed_over=None if go is None else HandOver(go.generation, go.started, go.reason))
        if view is not None:
            view.start(supervisor)
        collector.emit(ServerStarting(
            app=loaded.source, urls=(url,), mode=mode, mode_reason=reason,
            workers=config.workers, pid=os.getpid(), gil_enabled=gil_enabled(),
            python=platform.python_version(),
        ))
        if udp_sockets:
            logger.info("Listening on %s (HTTP/3 over UDP)",
                        describe_address(udp_sockets[0], "https"))
        watcher = None
        if config.reload:
            watcher = _start_watcher(config, supervisor, roots, collector,
                                     on_reexec=relaunch.request)
        if importer is not None and (link is not None or fresh_process_expected()):
            relaunch.keep_standby()  # edits here are likely to need one (again)
        if importer is not None and link is not None:
            collector.add(CatchUp(importer.recorder.changed_files, supervisor.graceful_reload))
        try:
            code = supervisor.run([sock], udp_sockets)
        finally:
            if watcher is not None:
                watcher.stop()
            if view is not None:
                view.close()
        logger.info("Finished server process [%d]", os.getpid())
        if relaunch.requested:
            for udp in udp_sockets:
                udp.close()
            if config.uds:
                sock.close()
                Path(config.uds).unlink(missing_ok=True)
            relaunch.finish()
        return code
    finally:
        if relaunch is not None:
            relaunch.close()
        if importer is not None:
            importer.close()
        sock.close()
        for udp in udp_sockets:
            udp.close()
        if config.uds:
            Path(config.uds).unlink(missing_ok=True)
