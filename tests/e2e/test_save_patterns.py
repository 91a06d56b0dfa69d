"""Editors' save patterns against a real ``devserve --reload`` with its default quiet period: every
save is served, and no pattern ever makes the server reload a half-written file.

Each pattern is done with real syscalls, the way editors do it: in place (truncate, write),
write-then-rename (an atomic save), vim's backup dance (rename the original to ``app.py~``, write
a new ``app.py``, delete the backup), format-on-save (a save, then the formatted save 50-300 ms
later) and a writer that pauses between two writes (5 ms, and 60 ms: longer than any quiet
period, so only the watcher's "still open for writing" check can hold the batch). The app's
``app`` is defined at the *end* of a file of some size, so a reload of any half-written version
fails loudly ("Reload failed") instead of serving something by luck.

The pauses below are part of what an editor does (the pattern under test), not waits for the
server: the server is only ever waited on by polling what it serves, with a deadline.
"""

from __future__ import annotations

import os
import queue
import re
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ServerFactory, ServerProcess, wait_until

from devserve.reload.watcher import ChangeSet, Watcher, open_for_writing

SAVES = 12  # per pattern; each is served before the next one starts
SERVE_DEADLINE = 10.0
FORMAT_GAPS = (0.05, 0.1, 0.2, 0.3)  # format-on-save: the formatter's save comes this much later


def app_source(message: str, padding: int = 300) -> str:
    """A plain ASGI app answering *message*; the padding comes before ``app``, so a file cut
    anywhere before its end has no ``app`` (or a syntax error): its reload fails visibly."""
    head = f"MESSAGE = {message!r}\n\n" + "".join(
        f"# padding line {i:04d}: a half-written file must never be reloaded\n"
        for i in range(padding))
    return head + textwrap.dedent("""

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            body = MESSAGE.encode()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
    """)


# --- the patterns: real syscalls, as editors make them ----------------------------------------


def in_place(path: Path, text: str) -> None:
    """VS Code, Sublime, nano: open with O_TRUNC, write, close."""
    with path.open("w") as f:
        f.write(text)


def write_then_rename(path: Path, text: str) -> None:
    """JetBrains' safe write, gedit, most libraries' atomic save: a temp file renamed over."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def vim_backup_dance(path: Path, text: str, pause: float = 0.0) -> None:
    """vim (``backupcopy=auto``, ``writebackup``), Emacs by default: check the directory is
    writable (vim's ``4913``), rename the original to ``app.py~``, write a new ``app.py``, fsync,
    restore the mode, delete the backup. *pause*: between the rename and the new file."""
    probe = path.with_name("4913")
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    probe.unlink()
    backup = path.with_name(path.name + "~")
    os.rename(path, backup)
    if pause:
        time.sleep(pause)  # the editor, descheduled with no app.py on disk
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, 0o644)
    backup.unlink()


def paused_writer(pause: float) -> Callable[[Path, str], None]:
    """Truncate, write the first half, pause (a slow disk, a descheduled editor), write the rest."""
    def save(path: Path, text: str) -> None:
        data = text.encode()
        with path.open("wb") as f:
            f.write(data[:len(data) // 2])
            f.flush()
            time.sleep(pause)  # the file on disk is half-written meanwhile
            f.write(data[len(data) // 2:])
    return save


def format_on_save(path: Path, text: str, gap: float) -> None:
    """The editor saves what was typed, the formatter saves its version *gap* seconds later.
    The first version is valid and answers differently, so the test can tell which is served."""
    in_place(path, text.replace("MESSAGE = ", "MESSAGE  =  'unformatted ' + "))
    time.sleep(gap)
    in_place(path, text)


PATTERNS: dict[str, Callable[[Path, str, int], None]] = {
    "in-place": lambda path, text, i: in_place(path, text),
    "write-then-rename": lambda path, text, i: write_then_rename(path, text),
    "vim-backup-dance": lambda path, text, i: vim_backup_dance(path, text),
    "vim-backup-dance-paused": lambda path, text, i: vim_backup_dance(path, text, pause=0.03),
    "format-on-save": lambda path, text, i: format_on_save(
        path, text, FORMAT_GAPS[i % len(FORMAT_GAPS)]),
    "slow-writer-5ms": lambda path, text, i: paused_writer(0.005)(path, text),
    "stalled-writer-60ms": lambda path, text, i: paused_writer(0.06)(path, text),
}


def fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def served(server: ServerProcess, expected: str) -> float:
    """Poll (fresh connections) until *expected* is served; seconds it took."""
    start = time.perf_counter()
    last: list[str | None] = [None]

    def check() -> bool:
        last[0] = fetch(server.url + "/")
        return last[0] == expected

    wait_until(check, SERVE_DEADLINE, f"{expected!r} served", interval=0.002,
               detail=lambda: f"last answer {last[0]!r}\nserver output:\n{server.output}")
    return time.perf_counter() - start


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_save_pattern_serves_every_save_and_never_a_half_written_file(
        tmp_path: Path, start_server: ServerFactory, pattern: str) -> None:
    app = tmp_path / "app.py"
    app.write_text(app_source("saved 0"))
    server = start_server("app:app", "--reload", "--no-access-log", cwd=tmp_path)
    server.wait_for(r"Watching for changes in 1 directory", SERVE_DEADLINE)
    assert fetch(server.url + "/") == "saved 0"

    save = PATTERNS[pattern]
    took = []
    for i in range(1, SAVES + 1):
        start = time.perf_counter()
        save(app, app_source(f"saved {i}"), i)
        served(server, f"saved {i}")
        took.append(time.perf_counter() - start)

    # The last reload is served before its log line (written once the old generation drained).
    last_change = max(i for i, line in enumerate(server.lines) if "Change detected" in line)
    server.wait_for(r"Reloaded: generation \d+ ready|Reload failed", SERVE_DEADLINE,
                    start=last_change)
    failed = [line for line in server.lines if "Reload failed" in line]
    assert failed == [], "a half-written file was reloaded:\n" + server.output
    assert "Traceback" not in server.output, server.output
    reloads = sum(1 for line in server.lines if re.search(r"Reloaded: generation \d+ ready", line))
    # No storm of reloads: at most two per save (format-on-save saves twice; vim's chmod after
    # the write may come after the batch closed).
    assert reloads <= 2 * SAVES, server.output
    took.sort()
    print(f"\n[{pattern}] {SAVES} saves, {reloads} reloads, save -> served p50 "
          f"{took[len(took) // 2] * 1000:.0f} ms, max {took[-1] * 1000:.0f} ms")


def test_a_save_landing_while_the_reload_reads_the_file(
        tmp_path: Path, start_server: ServerFactory) -> None:
    """Format-on-save at its worst: the formatter's save starts the moment the reload of the
    editor's save starts (the server logged the change) and pauses mid-file, so the reload's read
    of the module meets a half-written file unless it waits for the writer. No failure is shown,
    and the formatted version is served."""
    app = tmp_path / "app.py"
    app.write_text(app_source("saved 0"))
    server = start_server("app:app", "--reload", "--no-access-log", cwd=tmp_path)
    server.wait_for(r"Watching for changes in 1 directory", SERVE_DEADLINE)
    for i in range(1, SAVES + 1):
        mark = len(server.lines)
        in_place(app, app_source(f"typed {i}"))
        server.wait_for(r"Change detected in app\.py", SERVE_DEADLINE, start=mark)
        paused_writer(0.03)(app, app_source(f"saved {i}"))
        served(server, f"saved {i}")
    last_change = max(i for i, line in enumerate(server.lines) if "Change detected" in line)
    server.wait_for(r"Reloaded: generation \d+ ready|Reload failed", SERVE_DEADLINE,
                    start=last_change)
    failed = [line for line in server.lines if "Reload failed" in line]
    assert failed == [], "a reload read a half-written file:\n" + server.output


# --- the mechanism, on the watcher alone ----------------------------------------------------------


def test_open_for_writing_sees_a_writer_until_it_closes(tmp_path: Path) -> None:
    path = tmp_path / "app.py"
    path.write_text("x = 1\n")
    if open_for_writing(path) is None:
        pytest.skip("no read-lease probe here (not Linux, or leases unsupported): the watcher "
                    "falls back to size/mtime holding still")
    assert open_for_writing(path) is False
    with path.open("a") as writer:
        assert open_for_writing(path) is True
        with path.open() as reader:  # readers (the importer) never count
            assert reader.read() == "x = 1\n"
            assert open_for_writing(path) is True
        writer.write("y = 2\n")
    assert open_for_writing(path) is False
    assert open_for_writing(tmp_path) is None  # a directory: nothing to tell


def test_batch_waits_for_a_stalled_writer_to_close_the_file(tmp_path: Path) -> None:
    """A writer pausing far longer than the quiet period (here 150 ms with a 10 ms quiet period):
    the batch is emitted after the file is closed, and what the callback reads is the whole
    file. The writer signals each step through an Event, so the claim "not before the close" is
    checked against the moment it really happened."""
    root = tmp_path.resolve()
    target = root / "app.py"
    target.write_text(app_source("before"))
    got: queue.Queue[tuple[float, ChangeSet, str]] = queue.Queue()

    def on_change(changes: ChangeSet) -> None:
        got.put((time.monotonic(), changes, target.read_text()))

    watcher = Watcher([root], on_change, quiet_ms=10)
    watcher.start()
    try:
        assert watcher.started.wait(SERVE_DEADLINE)
        whole = app_source("after")
        closed_at: list[float] = []
        half_written = threading.Event()

        def write() -> None:
            with target.open("w") as f:
                f.write(whole[:len(whole) // 2])
                f.flush()
                half_written.set()
                time.sleep(0.15)  # the stall under test
                f.write(whole[len(whole) // 2:])
            closed_at.append(time.monotonic())

        writer = threading.Thread(target=write)
        writer.start()
        assert half_written.wait(SERVE_DEADLINE)
        emitted, changes, content = got.get(timeout=SERVE_DEADLINE)
        writer.join(SERVE_DEADLINE)
        assert changes.paths == (target,)
        assert content == whole, "the batch was emitted while the file was half-written"
        assert emitted >= closed_at[0]
        assert got.empty()
    finally:
        watcher.stop(timeout=5.0)
