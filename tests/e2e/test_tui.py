"""The live dashboard in a real terminal: ``python -m devserve app:app --port 0 --reload --tui on``
runs inside a tmux pane (120x45) on a tmux server of its own; the test reads the screen with
``tmux capture-pane`` and types with ``tmux send-keys``, like a developer would.

Every wait polls the screen (or HTTP, or a file) against a deadline; nothing sleeps to let the
server settle. Each test starts its own server in a fresh project directory and, at teardown,
stops that server by its PID (read from the dashboard header) and kills only its own session.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from conftest import wait_until
from rich.cells import cell_len

ROOT = Path(__file__).resolve().parents[2]
COLS, ROWS = 120, 45
START_TIMEOUT = 30.0
TIMEOUT = 20.0
POLL = 0.05
T = TypeVar("T")
# Our own tmux server, even when the tests themselves run inside tmux.
TMUX_ENV = {k: v for k, v in os.environ.items() if k != "TMUX"}

APP_SOURCE = '''\
import sys

VERSION = "{version}"


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({{"type": "lifespan.startup.complete"}})
            elif message["type"] == "lifespan.shutdown":
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    await receive()
    path = scope["path"]
    if path.startswith("/print/"):
        tag = path.rsplit("/", 1)[1]
        print(f"APP-STDOUT {{tag}}")
        print(f"APP-STDERR {{tag}}", file=sys.stderr)
    if path == "/debug":
        marker = "inside-the-handler"
        breakpoint()
    body = VERSION.encode()
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]}})
    await send({{"type": "http.response.body", "body": body}})
'''


def app_source(version: str) -> str:
    return APP_SOURCE.format(version=version)


# -- reading the screen ------------------------------------------------------------------------
def current_frame(screen: str) -> list[str] | None:
    """The last complete dashboard frame on the screen (from its top to its bottom border)."""
    lines = screen.split("\n")
    tops = [i for i, line in enumerate(lines) if line.startswith("╭")]
    if not tops:
        return None
    top = tops[-1]
    for j in range(top + 1, len(lines)):
        if lines[j].startswith("╰"):
            frame = lines[top:j + 1]
            return frame if "devserve" in frame[1] else None
        if not lines[j].startswith("│"):
            return None  # torn (being redrawn): read the screen again
    return None


def cells(line: str) -> list[str]:
    """Cells of a table row inside the dashboard panel (outer and inner borders dropped)."""
    parts = [p.strip() for p in re.split(r"[│┃]", line)]
    while parts and parts[0] == "":
        parts.pop(0)
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def rows_of(frame: list[str]) -> list[list[str]]:
    return [cells(line) for line in frame]


def worker_rows(frame: list[str]) -> list[list[str]]:
    """[slot, gen, worker, state, conns, in-flight, served, restarts, uptime] per worker."""
    return [r for r in rows_of(frame) if len(r) == 9 and r[0].isdigit() and r[1].isdigit()]


def reload_rows(frame: list[str]) -> list[list[str]]:
    """[gen, trigger, strategy, timing, outcome], newest first."""
    return [r for r in rows_of(frame) if len(r) == 5 and r[0].isdigit()
            and r[4] in ("running", "ok", "failed")]


def request_rows(frame: list[str]) -> list[list[str]]:
    """[method, path, status, time] for the request log."""
    return [r for r in rows_of(frame) if len(r) == 4 and r[0] in ("GET", "POST")
            and r[2].isdigit()]


def frame_text(frame: list[str]) -> str:
    return "\n".join(frame)


def header_generation(frame: list[str]) -> int | None:
    """The serving generation from the header (which may wrap onto a second line)."""
    header = []
    for line in frame[1:]:
        if cells(line) == ["workers"]:
            break
        header.append(line.strip("│ "))
    m = re.search(r"· generation (\d+)", " ".join(header))
    return int(m.group(1)) if m else None


def error_block(frame: list[str]) -> str | None:
    """The text of the error panel (None when there is none)."""
    start = next((i for i, line in enumerate(frame) if "error (kept serving" in line), None)
    if start is None:
        return None
    end = next(i for i in range(start + 1, len(frame)) if "╰" in frame[i][:4])
    return "\n".join(line[1:-1].strip().strip("│").strip() for line in frame[start:end + 1])


# -- driving tmux ------------------------------------------------------------------------------
class TuiSession:
    """One devserve dashboard in a tmux pane on a private tmux server."""

    def __init__(self, project: Path) -> None:
        self.project = project
        token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # A private tmux server whose socket lives in the test's tmp dir (removed with it).
        self.socket = str(project.parent / "tmux.sock")
        self.name = f"devserve-tui-{token}"
        self.rc_file = project / "exit-code"
        self.stty_file = project / "stty-after-exit"
        self.pid: int | None = None
        self.port: int | None = None
        self.started = False

    # tmux plumbing
    def tmux(self, *args: str) -> str:
        proc = subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True,
                              text=True, timeout=10, check=False, env=TMUX_ENV)
        if proc.returncode != 0:
            raise AssertionError(f"tmux {args!r} failed: {proc.stderr.strip()}")
        return proc.stdout

    def start(self, *extra: str) -> None:
        script = self.project / "run.sh"
        command = shlex.join([sys.executable, "-m", "devserve", "app:app", "--port", "0",
                              "--reload", "--tui", "on", *extra])
        script.write_text("\n".join([
            f"cd {shlex.quote(str(self.project))}",
            f"export PYTHONPATH={shlex.quote(str(ROOT))}",
            "export DEVSERVE_TUI=on PYTHONUNBUFFERED=1",
            "unset PYTHONBREAKPOINT DEVSERVE_LOG_FORMAT",
            command,
            f"echo $? > {shlex.quote(str(self.rc_file))}",
            f"stty -a > {shlex.quote(str(self.stty_file))} 2>&1",
            "PS1='after-exit$ ' exec /bin/sh",
            "",
        ]))
        self.tmux("new-session", "-d", "-s", self.name, "-x", str(COLS), "-y", str(ROWS),
                  f"/bin/sh {shlex.quote(str(script))}")
        self.started = True

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def wait(self, what: str, check: Callable[[str], T | None], timeout: float = TIMEOUT) -> T:
        """Poll the screen until *check* returns something truthy; fail with the screen."""
        screen = [""]

        def on_screen() -> T | None:
            screen[0] = self.screen()
            return check(screen[0])

        result = wait_until(on_screen, timeout, f"{what} on screen", POLL,
                            detail=lambda: f"Screen:\n{screen[0]}")
        assert result is not None
        return result

    def wait_frame(self, what: str, check: Callable[[list[str]], Any],
                   timeout: float = TIMEOUT) -> list[str]:
        def on_screen(screen: str) -> list[str] | None:
            frame = current_frame(screen)
            return frame if frame is not None and check(frame) else None

        return self.wait(what, on_screen, timeout)

    def wait_ready(self) -> list[str]:
        """The header with the URL and the workers table with generation 1 ready."""
        frame = self.wait_frame(
            "header URL and a ready generation-1 worker",
            lambda f: re.search(r"http://127\.0\.0\.1:\d+", f[1])
            and [r[1:4:2] for r in worker_rows(f)] == [["1", "ready"]],
            START_TIMEOUT,
        )
        m = re.search(r"http://127\.0\.0\.1:(\d+)", frame[1])
        assert m is not None
        self.port = int(m.group(1))
        assert self.port > 0
        pid = re.search(r"· pid (\d+) ·", frame_text(frame))
        assert pid is not None, frame_text(frame)
        self.pid = int(pid.group(1))
        return frame

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=TIMEOUT)

    def alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        stat = Path(f"/proc/{self.pid}/stat")
        try:  # a zombie counts as gone
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def wait_file(self, path: Path, timeout: float = TIMEOUT) -> str:
        def written() -> str:
            text = path.read_text() if path.exists() else ""
            return text if text.endswith("\n") else ""

        return wait_until(written, timeout, f"{path.name} written", POLL,
                          detail=lambda: f"Screen:\n{self.screen()}")

    def close(self) -> None:
        """Stop the server we started (by PID), then kill our own tmux session."""
        if self.alive():
            assert self.pid is not None
            os.kill(self.pid, signal.SIGTERM)
            try:
                wait_until(lambda: not self.alive(), 15, "the server gone after SIGTERM", POLL)
            except AssertionError:
                os.kill(self.pid, signal.SIGKILL)
        if self.started:
            subprocess.run(["tmux", "-S", self.socket, "kill-session", "-t", self.name],
                           capture_output=True, timeout=10, check=False, env=TMUX_ENV)


@pytest.fixture
def tui(tmp_path: Path) -> Iterator[TuiSession]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_text(app_source("v1"))
    session = TuiSession(project)
    try:
        yield session
    finally:
        session.close()


def wait_http(session: TuiSession, path: str, expected: str, timeout: float = TIMEOUT) -> None:
    body = [""]

    def answered() -> bool:
        body[0] = session.get(path).text
        return body[0] == expected

    wait_until(answered, timeout, f"GET {path} answering {expected!r}", POLL,
               detail=lambda: f"last answer {body[0]!r}")


# -- tests -------------------------------------------------------------------------------------
def test_header_workers_requests_and_manual_reload(tui: TuiSession) -> None:
    tui.start()
    frame = tui.wait_ready()
    text = frame_text(frame)
    assert "devserve app:app" in frame[1]
    assert "thread mode" in text and header_generation(frame) == 1
    assert worker_rows(frame)[0][:4] == ["0", "1", "devserve-g1-w0", "ready"]
    assert worker_rows(frame)[0][7] == "0/5"
    assert "r reload · R restart · c clear error · l request log · q quit" in text
    assert all(cell_len(line) == COLS for line in frame)

    for i in range(3):
        assert tui.get(f"/hello-{i}").text == "v1"
    assert tui.get("/hello-404-not").status_code == 200
    frame = tui.wait_frame(
        "the four requests in the request log",
        lambda f: [r[1] for r in request_rows(f)] == ["/hello-0", "/hello-1", "/hello-2",
                                                      "/hello-404-not"],
    )
    assert all(r[0] == "GET" and r[2] == "200" and r[3].endswith(" ms")
               for r in request_rows(frame))
    title = re.search(r"requests · (\d+\.\d) req/s · (\d+) total", frame_text(frame))
    assert title is not None and float(title.group(1)) > 0 and title.group(2) == "4"

    tui.keys("r")
    frame = tui.wait_frame(
        "generation 2 and an 'ok' reload row after pressing r",
        lambda f: reload_rows(f)[:1] and reload_rows(f)[0][0] == "2"
        and reload_rows(f)[0][4] == "ok"
        and [r[1:4:2] for r in worker_rows(f)] == [["2", "ready"]],
    )
    row = reload_rows(frame)[0]
    assert row[1] == "manual" and row[2].startswith("full · "), row  # r: everything
    assert re.fullmatch(r"- → \d+ → \d+ → \d+ ms", row[3]), row
    assert header_generation(frame) == 2
    assert tui.get("/").text == "v1"


def test_syntax_error_panel_then_fix(tui: TuiSession) -> None:
    tui.start()
    tui.wait_ready()
    app = tui.project / "app.py"
    good = app_source("v1")
    broken = good + "\n\ndef broken(:\n    pass\n"
    bad_line = broken.split("\n").index("def broken(:") + 1
    app.write_text(broken)

    frame = tui.wait_frame("the error panel after saving a syntax error",
                           lambda f: error_block(f) is not None)
    block = error_block(frame)
    assert block is not None
    assert f"app.py:{bad_line}" in block, block
    assert "SyntaxError" in block
    assert "def broken(:" in block  # the traceback text, with the offending line
    at_line = next(line for line in block.split("\n") if line.startswith("at "))
    assert at_line == f"at {app}:{bad_line}", block
    rows = reload_rows(frame)
    assert rows[0][1:3] == ["app.py", "reimport"] and rows[0][4] == "failed", rows
    # The previous generation keeps serving, and the dashboard says so.
    assert header_generation(frame) == 1
    assert [r[1:4:2] for r in worker_rows(frame)] == [["1", "ready"]]
    for _ in range(3):
        assert tui.get("/").text == "v1"

    app.write_text(app_source("v2"))
    frame = tui.wait_frame(
        "the error panel gone and an ok reload after fixing the file",
        lambda f: error_block(f) is None and reload_rows(f)
        and reload_rows(f)[0][4] == "ok",
    )
    assert [r[4] for r in reload_rows(frame)][:2] == ["ok", "failed"]
    assert header_generation(frame) == 2
    wait_http(tui, "/", "v2")


def test_l_toggles_the_request_log(tui: TuiSession) -> None:
    tui.start()
    tui.wait_ready()
    assert tui.get("/seen-in-log").text == "v1"
    tui.wait_frame("the request in the log",
                   lambda f: any(r[1] == "/seen-in-log" for r in request_rows(f)))
    tui.keys("l")
    frame = tui.wait_frame("the request log hidden after l",
                           lambda f: "req/s" not in frame_text(f))
    assert "/seen-in-log" not in frame_text(frame)
    assert worker_rows(frame) and "q quit" in frame_text(frame)
    tui.keys("l")
    tui.wait_frame("the request log back after a second l",
                   lambda f: "req/s" in frame_text(f)
                   and any(r[1] == "/seen-in-log" for r in request_rows(f)))


def cursor_visible(tui: TuiSession) -> bool:
    """tmux's view of the pane's cursor (DECTCEM): the live view hides it while it draws."""
    return tui.tmux("display-message", "-p", "-t", tui.name, "#{cursor_flag}").strip() == "1"


def test_q_exits_and_restores_the_terminal(tui: TuiSession) -> None:
    tui.start()
    tui.wait_ready()
    assert tui.get("/").text == "v1"
    assert not cursor_visible(tui)
    tui.keys("q")
    rc = tui.wait_file(tui.rc_file)
    assert rc.strip() == "0"
    assert not tui.alive()
    assert cursor_visible(tui)
    # The terminal as the shell gets it back, read right after the server exited ...
    stty = tui.wait_file(tui.stty_file)
    flags = set(stty.split())
    assert {"icanon", "echo"} <= flags, stty
    assert not {"-icanon", "-echo"} & flags, stty
    # ... and used interactively: the typed command echoes, runs, and reports cooked mode.
    tui.wait("the shell prompt after exit", lambda s: "after-exit$" in s)
    tui.keys("stty -a", "Enter")
    screen = tui.wait("stty output in the pane",
                      lambda s: s if re.search(r"(?<![\w-])icanon\b", s) else None)
    assert "after-exit$ stty -a" in screen  # echo is on: the typed text is visible
    assert re.search(r"(?<![\w-])echo\b", screen), screen
    assert not re.search(r"(?<![\w])-icanon\b", screen), screen
    # The final frame stays in the scrollback; nothing of it is drawn over the shell.
    prompt_line = max(i for i, line in enumerate(screen.split("\n")) if "after-exit$" in line)
    assert all(not line.startswith(("│", "╰")) for line in screen.split("\n")[prompt_line:])


def test_app_print_appears_above_the_view(tui: TuiSession) -> None:
    tui.start()
    tui.wait_ready()
    tags = [f"t{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    for tag in tags:
        assert tui.get(f"/print/{tag}").text == "v1"

    def printed_and_intact(screen: str) -> tuple[list[str], list[str]] | None:
        frame = current_frame(screen)
        if frame is None or len(request_rows(frame)) != len(tags):
            return None
        lines = screen.split("\n")
        top = max(i for i, line in enumerate(lines) if line.startswith("╭"))
        above = lines[:top]
        wanted = [f"APP-{stream} {tag}" for tag in tags for stream in ("STDOUT", "STDERR")]
        if not all(w in above for w in wanted):
            return None
        return above, frame

    above, frame = tui.wait("app output above an intact dashboard", printed_and_intact)
    order = [above.index(f"APP-STDOUT {tag}") for tag in tags]
    assert order == sorted(order)
    # The panel is whole: every line a full-width panel line, the app output nowhere inside.
    assert all(cell_len(line) == COLS for line in frame), "\n".join(frame)
    assert all(line[0] in "╭│╰" for line in frame)
    assert "APP-" not in frame_text(frame)
    assert worker_rows(frame)[0][:4] == ["0", "1", "devserve-g1-w0", "ready"]
    assert [r[1] for r in request_rows(frame)] == [f"/print/{tag}" for tag in tags]

    # It keeps rendering after the output: a reload still shows up in the same frame.
    tui.keys("r")
    tui.wait_frame("generation 2 after printing",
                   lambda f: [r[1:4:2] for r in worker_rows(f)] == [["2", "ready"]]
                   and all(cell_len(line) == COLS for line in f))


def test_breakpoint_pauses_the_view_and_resumes(tui: TuiSession) -> None:
    tui.start()
    tui.wait_ready()
    result: dict[str, Any] = {}

    def request() -> None:
        try:
            r = httpx.get(tui.url + "/debug", timeout=90)
            result["status"], result["text"] = r.status_code, r.text
        except httpx.HTTPError as exc:
            result["error"] = repr(exc)

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    screen = tui.wait("the (Pdb) prompt", lambda s: s if "(Pdb)" in s else None)
    assert f"{tui.project / 'app.py'}(" in screen, screen
    assert "-> body = VERSION.encode()" in screen, screen
    assert not result  # the request waits in the debugger

    # The debugger is usable: the terminal is in cooked mode and echoes what is typed.
    tui.keys("p marker", "Enter")
    tui.wait("pdb printing a local variable",
             lambda s: "(Pdb) p marker" in s and "'inside-the-handler'" in s)
    assert thread.is_alive()

    tui.keys("c", "Enter")
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "the request did not finish after 'c'"
    assert result == {"status": 200, "text": "v1"}, result
    frame = tui.wait_frame(
        "the dashboard back with the finished /debug request",
        lambda f: worker_rows(f) and any(r[1] == "/debug" and r[2] == "200"
                                         for r in request_rows(f)),
    )
    assert worker_rows(frame)[0][:4] == ["0", "1", "devserve-g1-w0", "ready"]
    # Keys work again after the pause (the key reader is back in cbreak mode).
    tui.keys("r")
    tui.wait_frame("generation 2 after resuming and pressing r",
                   lambda f: [r[1:4:2] for r in worker_rows(f)] == [["2", "ready"]])


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_closing_the_terminal_stops_the_server(tui: TuiSession) -> None:
    """Closing the terminal window (the pane goes away: SIGHUP, then EOF/EIO on the tty) must
    not leave an orphaned server holding the port, let alone one spinning on its dead stdin."""
    tui.start()
    tui.wait_ready()
    assert tui.get("/").text == "v1"
    pid = tui.pid
    assert pid is not None
    tui.tmux("kill-session", "-t", tui.name)
    tui.started = False
    with contextlib.suppress(AssertionError):  # still alive: reported below, with diagnostics
        wait_until(lambda: not tui.alive(), TIMEOUT, "the server gone", POLL)
    if tui.alive():
        # Report what the orphan is doing: CPU over one second and whether it still serves.
        before, t0 = _cpu_ticks(pid), time.monotonic()
        while time.monotonic() - t0 < 1.0:
            time.sleep(POLL)
        cpu = (_cpu_ticks(pid) - before) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
        try:
            serving = f"still answers GET / with {tui.get('/').text!r}"
        except httpx.HTTPError as exc:
            serving = f"does not answer ({exc!r})"
        raise AssertionError(
            f"devserve (pid {pid}) still runs {TIMEOUT}s after its terminal closed; it uses "
            f"{cpu:.0%} of a core and {serving}")
