"""Shared fixtures: start the real devserve server as a subprocess on 127.0.0.1:0 and wait for
its readiness line (never a sleep); ``wait_until`` is the one deadline-bounded poll for states
that announce themselves by no line."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
LISTEN_RE = re.compile(r"Listening on (https?)://([^\s:]+|\[[^\]]+\]):(\d+)")
READY_RE = re.compile(r"Serving generation (\d+)")
POLL_INTERVAL = 0.01

T = TypeVar("T")


def _timed_out(what: str, timeout: float, detail: Callable[[], str] | None) -> AssertionError:
    extra = f"\n{detail()}" if detail is not None else ""
    return AssertionError(f"{what} not reached within {timeout}s{extra}")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition",
               interval: float = POLL_INTERVAL, detail: Callable[[], str] | None = None) -> T:
    """Re-check *predicate* until it returns something truthy and return that value; on timeout
    fail naming *what*, followed by *detail()* (state at that moment, e.g. the server's output).
    *interval* only paces the re-checks: nothing here waits for things to settle."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, detail)
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], Awaitable[T] | T], timeout: float = 10.0,
                           what: str = "condition", interval: float = 0.0,
                           detail: Callable[[], str] | None = None) -> T:
    """``wait_until`` inside a running event loop: *predicate* may be a coroutine function (e.g. a
    request on a client bound to this loop) or a plain check of state the loop changes; between
    checks the loop runs (``interval`` 0 lets every ready callback run once, no wall-clock wait)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]  # awaited above when it was awaitable
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, detail)
        await asyncio.sleep(interval)


class ServerProcess:
    """A devserve subprocess whose combined output is collected line by line in a thread."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.setdefault("DEVSERVE_TUI", "off")
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), str(APPS), full_env.get("PYTHONPATH", "")]
        )
        if env:
            full_env.update(env)
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devserve", *args],
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.host = "127.0.0.1"
        self.port = 0
        self.scheme = "http"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        self.proc.stdout.close()  # at EOF: nothing left to read, and no unclosed-file warning
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 15.0,
                 start: int = 0) -> re.Match[str]:
        """Block until a line matching *pattern* appears at index >= *start*; fail on timeout."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self.lines):
                    m = regex.search(self.lines[index])
                    if m:
                        return m
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and index >= len(self.lines)
                                      and not self._reader.is_alive()):
                    raise AssertionError(
                        f"pattern {regex.pattern!r} not seen; output so far:\n{self.output}"
                    )
                self._cond.wait(min(remaining, 0.1))

    def wait_ready(self, timeout: float = 20.0) -> ServerProcess:
        m = self.wait_for(LISTEN_RE, timeout)
        self.scheme, host, port = m.group(1), m.group(2), int(m.group(3))
        self.host = host.strip("[]")
        self.port = port
        self.wait_for(READY_RE, timeout)
        return self

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def send_signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; SIGKILL if it overruns (then the test that cares will fail)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return self.proc.returncode

    def wait_exit(self, timeout: float = 20.0) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Factory fixture: ``start_server("app:app", "--flag", ready=True)``; every server it
    started is stopped at teardown."""
    started: list[ServerProcess] = []

    def factory(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                ready: bool = True, port: bool = True) -> ServerProcess:
        argv = list(args)
        if port and "--port" not in argv and "--uds" not in argv and "--fd" not in argv:
            argv += ["--port", "0"]
        server = ServerProcess(argv, cwd or tmp_path, env)
        started.append(server)
        if ready:
            server.wait_ready()
        return server

    yield factory
    for server in started:
        server.stop()


def descendants(pid: int) -> set[int]:
    """Processes under *pid* from /proc (what ``pgrep -P`` reads, recursively): its children,
    and the workers forked from its process templates."""
    found: set[int] = set()
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = {int(p) for p in (task / "children").read_text().split()}
        except OSError:
            continue
        found |= children
        for child in children:
            found |= descendants(child)
    return found
