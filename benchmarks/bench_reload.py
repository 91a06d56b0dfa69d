"""Reload under load: devserve (process and thread workers) vs uvicorn, side by side.

Each server runs a copy of ``examples/hello.py`` (in a temporary directory, so it can be edited)
with ``--workers 2``. While 20 keep-alive clients send requests back to back for a bounded time,
the app file is edited and the server gets SIGHUP K times, evenly spaced:

- devserve: SIGHUP is a rolling reload (generation N+1 ready, then N drained); thread workers
  re-import the edited module, process workers are spawned fresh.
- uvicorn: SIGHUP with ``--workers`` restarts its worker processes one by one (each replacement
  started and ready before the old one is terminated); new processes import the edited file.

Measured per server: requests answered, failed (non-200), refused (connect errors), reset
(connection closed or reset before a complete response), timeouts, the longest time with no
successful response anywhere, and for each reload the time from the signal until the first
response from the edited code. One fresh process and port per run; servers are always stopped.

Run from the repo root::

    python benchmarks/bench_reload.py                 # 1 round x 3 servers x 20 s, ~75 s
    python benchmarks/bench_reload.py --quick         # 8 s runs, 3 reloads
    python benchmarks/bench_reload.py --rounds 3 --reloads 5 --duration 20
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import (
    LOCALHOST,
    REPO_ROOT,
    Benchmark,
    Metric,
    RunningServer,
    ServerSpec,
)
from _load import Http1Client, new_errors

HELLO = REPO_ROOT / "examples" / "hello.py"
ORIGINAL = b"Hello, world!"
REQUEST_TIMEOUT = 5.0


def _switches(run: dict[str, Any]) -> list[float]:
    return [s for s in run["switch_ms"] if s is not None]


BENCH = Benchmark(
    kind="reload",
    title="reload under load",
    description="SIGHUP reloads under keep-alive load: devserve (process, thread) vs uvicorn.",
    servers=("devserve-process", "devserve-thread", "uvicorn"),
    full={"rounds": 1, "duration": 20.0, "connections": 20, "reloads": 5},
    quick={"duration": 8.0, "reloads": 3},
    metrics=(
        Metric("requests_ok", lambda r: r["ok"], fold=sum, label="ok", fmt="{:,}"),
        Metric("requests_per_sec_median", lambda r: r["requests_per_sec"], label="req/s",
               fmt="{:,.1f}", better="higher"),
        Metric("failed", lambda r: r["errors"]["status"], fold=sum, label="failed", fmt="{}"),
        Metric("refused", lambda r: r["errors"]["connect"], fold=sum, label="refused",
               fmt="{}"),
        Metric("reset", lambda r: r["errors"]["read"] + r["errors"]["write"], fold=sum,
               label="reset", fmt="{}"),
        Metric("timeouts", lambda r: r["errors"]["timeout"], fold=sum, label="timeout",
               fmt="{}"),
        Metric("errors_total", lambda r: sum(r["errors"].values()), fold=sum),
        Metric("longest_gap_ms_median", lambda r: r["longest_gap_ms"],
               label="longest gap ms", fmt="{:,.1f}", better="lower"),
        Metric("longest_gap_ms_max", lambda r: r["longest_gap_ms"], fold=max),
        Metric("switch_ms_median", _switches, label="switch ms", fmt="{:,.1f}",
               better="lower"),
        Metric("switch_ms_max", _switches, fold=lambda v: max(v, default=None),
               label="switch max ms", fmt="{:,.1f}"),
        Metric("reloads_never_switched", lambda r: sum(s is None for s in r["switch_ms"]),
               fold=sum),
        Metric("stale_after_switch", lambda r: r["stale_after_switch"], fold=sum,
               label="stale", fmt="{}"),
        Metric("final_code_served", lambda r: r["final_code_served"], fold=all,
               label="new code"),
    ),
    packages=("devserve", "uvicorn", "h11", "uvloop", "httptools"),
    loop=True,
    start_timeout=30.0,
)


def body_for(edit: int) -> bytes:
    return ORIGINAL if edit == 0 else f"Hello, edit {edit}!".encode()


def write_app(directory: Path, edit: int) -> None:
    """Copy examples/hello.py with its greeting changed to mark edit number *edit*."""
    source = HELLO.read_text()
    assert 'HELLO = b"Hello, world!"' in source, "examples/hello.py changed its greeting line"
    body = body_for(edit).decode()
    (directory / "hello.py").write_text(
        source.replace('HELLO = b"Hello, world!"', f"HELLO = b{body!r}")
    )


def server_spec(name: str, port: int, app_dir: Path, loop: str) -> ServerSpec:
    common = [
        "hello:app", "--app-dir", str(app_dir), "--host", LOCALHOST, "--port", str(port),
        "--workers", "2", "--loop", loop, "--http", "h11", "--no-access-log", "--log-level", "info",
    ]
    if name == "uvicorn":
        argv = [sys.executable, "-m", "uvicorn", *common]
    else:
        mode = name.split("-", 1)[1]
        argv = [sys.executable, "-m", "devserve", *common, "--worker-mode", mode]
    return ServerSpec(name, argv, f"http://{LOCALHOST}:{port}/", cwd=app_dir,
                      expect_body=ORIGINAL)


async def load_with_reloads(port: int, pid: int, app_dir: Path, *, connections: int,
                            duration_s: float, reloads: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    stop_at = start + duration_s
    errors = new_errors()
    first_errors: list[str] = []
    # (finished, sent, body) of every 200 answer; errors are counted where they happen.
    answers: list[tuple[float, float, bytes]] = []

    def note(kind: str, exc: BaseException) -> None:
        if len(first_errors) < 10:
            first_errors.append(f"+{loop.time() - start:.3f}s {kind}: {type(exc).__name__}"
                                f" {exc}".rstrip())

    async def client() -> None:
        conn = Http1Client(LOCALHOST, port, timeout=REQUEST_TIMEOUT, errors=errors,
                           on_error=note)
        while loop.time() < stop_at:
            sent = loop.time()
            answer = await conn.get()
            if answer is None:
                continue
            if answer[0] == 200:
                answers.append((loop.time(), sent, answer[1]))
            else:
                errors["status"] += 1
                note("status", RuntimeError(f"HTTP {answer[0]}"))
        conn.close()

    async def reloader() -> list[float]:
        signalled: list[float] = []
        for i in range(1, reloads + 1):
            await asyncio.sleep(max(0.0, start + duration_s * i / (reloads + 1) - loop.time()))
            write_app(app_dir, i)
            signalled.append(loop.time())
            os.kill(pid, signal.SIGHUP)
        return signalled

    tasks = [asyncio.ensure_future(client()) for _ in range(connections)]
    signalled = await reloader()
    await asyncio.gather(*tasks)
    end = loop.time()

    answers.sort()
    points = [start, *(a[0] for a in answers), end]
    switch_ms: list[float | None] = []
    stale = 0
    for i, at in enumerate(signalled, start=1):
        new = body_for(i)
        first = next((a for a in answers if a[0] >= at and a[2] == new), None)
        switch_ms.append(None if first is None else round((first[0] - at) * 1e3, 1))
        if first is not None:
            until = signalled[i] if i < len(signalled) else end
            stale += sum(1 for a in answers if first[0] < a[1] < until and a[2] != new)
    return {
        "duration_s": round(end - start, 3),
        "ok": len(answers),
        "requests_per_sec": round(len(answers) / (end - start), 1),
        "errors": errors,
        "longest_gap_ms": round(max(b - a for a, b in itertools.pairwise(points)) * 1e3, 1),
        "switch_ms": switch_ms,
        # old-code answers to requests sent after the first new one
        "stale_after_switch": stale,
        "final_code_served": bool(answers) and answers[-1][2] == body_for(reloads),
        "first_errors": first_errors,
    }


def line(run: dict[str, Any]) -> str:
    return (f"{run['ok']:>7} ok  {sum(run['errors'].values()):>4} errors  longest gap "
            f"{run['longest_gap_ms']:7.1f} ms  switch {run['switch_ms']}")


def main(argv: list[str] | None = None) -> int:
    parser = BENCH.parser()
    parser.add_argument("--reloads", type=int, help="SIGHUPs per run, evenly spaced (5; quick: 3)")
    args = BENCH.parse(parser, argv)
    if args.reloads < 1:
        parser.error("--reloads must be >= 1")

    def one_run(name: str, _: str | None) -> dict[str, Any]:
        app_dir = Path(tempfile.mkdtemp(prefix=f"bench-reload-{name}-"))

        def measure(server: RunningServer) -> dict[str, Any]:
            result = asyncio.run(load_with_reloads(
                server.spec.port, server.process.pid, app_dir,
                connections=args.connections, duration_s=args.duration, reloads=args.reloads))
            log = server.log_path.read_text(errors="replace")
            marker = "Reloaded: generation" if name.startswith("devserve") else "Received SIGHUP"
            return {**result, "reload_log_lines": log.count(marker)}

        try:
            write_app(app_dir, 0)
            return BENCH.serve(args, lambda port: server_spec(name, port, app_dir, args.loop),
                               measure)
        finally:
            shutil.rmtree(app_dir, ignore_errors=True)

    return BENCH.run(
        args, one_run, line=line,
        header=f"--workers 2 | loop {args.loop} | {args.connections} keep-alive clients x "
               f"{args.duration:g}s | {args.reloads} x (edit + SIGHUP)",
        settings={"reloads": args.reloads, "workers": 2, "request_timeout_s": REQUEST_TIMEOUT,
                  "client": "asyncio raw sockets, keep-alive, one request in flight per "
                            "connection", "app_copy": "fresh app copy per run"},
        commands={name: server_spec(name, 0, Path("APP_DIR"), args.loop).template()
                  for name in args.servers},
        extra={"app": "copy of examples/hello.py, greeting edited before each SIGHUP"},
    )


if __name__ == "__main__":
    sys.exit(main())
