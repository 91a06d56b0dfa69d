"""One server process for one benchmark run: how to start it (:class:`ServerSpec`), when it is
ready (a probe polled against a deadline), and stopping it whatever happens.

Stdlib only; scripts reach these through ``_common``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _load import LOCALHOST, http_get
from _machine import REPO_ROOT


def free_port(host: str = LOCALHOST) -> int:
    """Ask the kernel for an unused port (bind to 0) instead of guessing one that may be taken.

    There is a small race between closing this socket and the server binding the port; on a
    loopback-only benchmark host it is negligible, and start-up failure is reported clearly.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


Probe = Callable[[str, float], tuple[int, bytes]]  # (url, timeout) -> (status, body)


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: the exact argv, where, and how to tell it is ready
    (``probe`` answers 200 with ``expect_body``)."""

    name: str
    argv: Sequence[str]
    url: str
    cwd: Path = REPO_ROOT
    env: Mapping[str, str] = field(default_factory=dict)
    expect_body: bytes | None = None
    probe: Probe = http_get

    @property
    def command(self) -> str:
        return subprocess.list2cmdline(list(self.argv))

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 0

    def template(self) -> dict[str, str]:
        """The command with PORT for the port (build the spec with port 0), and its cwd."""
        command = self.command.replace(f"{LOCALHOST}:0", f"{LOCALHOST}:PORT")
        return {"command": command.replace("--port 0", "--port PORT"), "cwd": str(self.cwd)}


class ServerError(RuntimeError):
    """A server did not come up (exited early, never answered), or died during a run."""


@dataclass
class RunningServer:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    log_path: Path
    startup_s: float = 0.0

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def wait_ready(url: str, *, probe: Probe = http_get, expect_body: bytes | None = None,
               timeout: float = 20.0, interval: float = 0.05,
               process: subprocess.Popen[bytes] | None = None) -> float:
    """Probe ``url`` until it answers 200 (with ``expect_body``); the seconds it took.

    A deadline instead of a fixed sleep: a fixed sleep is either too short on a slow machine
    (load hits a half-started server) or wasted time on a fast one. Raises ServerError if the
    process exits first or the deadline passes.
    """
    start = time.monotonic()
    deadline = start + timeout
    last = "no attempt"
    while True:
        if process is not None and process.poll() is not None:
            raise ServerError(f"server exited with code {process.returncode} before it was ready")
        try:
            status, body = probe(url, min(1.0, max(0.05, deadline - time.monotonic())))
        except (OSError, http.client.HTTPException) as exc:  # TimeoutError is an OSError
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200 and expect_body in (None, body):
                return time.monotonic() - start
            last = f"HTTP {status} {body[:80]!r}"
        if time.monotonic() >= deadline:
            raise ServerError(f"not ready after {timeout:.1f}s ({last})")
        time.sleep(interval)


def stop_process(process: subprocess.Popen[Any], *, grace: float = 5.0) -> int | None:
    """Stop a child we started: SIGTERM to its PID, then SIGKILL after ``grace`` seconds.

    SIGTERM first so the server shuts down its own workers. The SIGKILL fallback goes to the
    child's process group while the child is still alive (it was started in its own session,
    so that group holds only what we started) to leave no orphaned worker behind.
    """
    if process.poll() is not None:
        return process.returncode
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        return process.wait(timeout=grace)
    return None


@contextlib.contextmanager
def running_server(spec: ServerSpec, *, start_timeout: float = 20.0, stop_grace: float = 5.0,
                   log_dir: Path | None = None) -> Iterator[RunningServer]:
    """Start ``spec``, wait until it is ready, yield it, and always stop it (even on Ctrl+C).

    Output goes to a log file rather than a pipe: a chatty server writing into a pipe nobody
    reads would block and skew the measurement.
    """
    log_dir = log_dir or Path(tempfile.gettempdir())
    log_dir.mkdir(parents=True, exist_ok=True)
    fd, log_name = tempfile.mkstemp(prefix=f"bench-{spec.name}-", suffix=".log", dir=log_dir)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(
            list(spec.argv), cwd=spec.cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: Ctrl+C in the terminal reaches us, and we stop the server in order.
            start_new_session=True,
        )
    server = RunningServer(spec=spec, process=process, log_path=Path(log_name))
    try:
        try:
            server.startup_s = wait_ready(spec.url, probe=spec.probe, process=process,
                                          expect_body=spec.expect_body, timeout=start_timeout)
        except ServerError as exc:
            raise ServerError(
                f"{spec.name}: {exc}\n  command: {spec.command}\n  log tail:\n{server.log_tail()}"
            ) from None
        yield server
    finally:
        stop_process(process, grace=stop_grace)


def process_usage(pid: int) -> dict[str, Any] | None:
    """RSS (MiB), threads, open fds and whether it is a zombie (exited, not reaped by its
    parent), from Linux /proc; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mib": int(fields.get("VmRSS", "0 kB").split()[0]) / 1024,
            "threads": int(fields.get("Threads", "0")), "fds": fds,
            "zombie": fields.get("State", "").strip().startswith("Z")}


def descendants(pid: int) -> list[int]:
    """Every process below *pid* (children, grandchildren...), from the PPids in /proc: a
    server's workers, or a reloader's current child."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def tree_usage(pid: int) -> dict[str, Any]:
    """What a server holds: ``rss_mib``, ``fds``, ``threads`` of *pid*, and ``tree_...`` the same
    summed over it and all its descendants (RSS summed: shared pages count once per process),
    ``tree_processes`` and ``tree_zombies``. A reloader that restarts a child, or a supervisor
    with worker processes, is measured whole only by its tree."""
    found = process_usage(pid)
    tree = [u for u in [found, *map(process_usage, descendants(pid))] if u is not None]
    own = found or {}
    return {"rss_mib": round(own.get("rss_mib", 0.0), 1), "fds": own.get("fds", 0),
            "threads": own.get("threads", 0),
            "tree_rss_mib": round(sum(u["rss_mib"] for u in tree), 1),
            "tree_fds": sum(u["fds"] for u in tree),
            "tree_threads": sum(u["threads"] for u in tree),
            "tree_processes": len(tree), "tree_zombies": sum(u["zombie"] for u in tree)}


def measure_server(spec: ServerSpec, measure: Callable[[RunningServer], Mapping[str, Any]], *,
                   start_timeout: float, log_dir: Path | None = None) -> dict[str, Any]:
    """One run: start ``spec``, ``measure`` it, stop it; a server that died during the run
    fails the benchmark (its numbers would be about a crash, not the server)."""
    with running_server(spec, start_timeout=start_timeout, log_dir=log_dir) as server:
        result = measure(server)
        crashed = server.process.poll() is not None
    if crashed:
        raise ServerError(f"{spec.name} exited during the run\n{server.log_tail()}")
    return {"command": spec.command, "cwd": str(spec.cwd),
            "startup_s": round(server.startup_s, 3), **result}
