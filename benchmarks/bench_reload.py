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

import argparse
import asyncio
import datetime as dt
import itertools
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    LOCALHOST,
    REPO_ROOT,
    ServerError,
    ServerSpec,
    default_loop,
    format_table,
    free_port,
    machine_info,
    median,
    ratio,
    results_path,
    running_server,
    sigterm_as_interrupt,
    write_json,
)

HELLO = REPO_ROOT / "examples" / "hello.py"
ORIGINAL = b"Hello, world!"
SERVERS = ("devserve-process", "devserve-thread", "uvicorn")
REQUEST_TIMEOUT = 5.0


# --------------------------------------------------------------------------- the app and servers


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
    py = sys.executable
    if name.startswith("devserve-"):
        mode = name.split("-", 1)[1]
        argv = [py, "-m", "devserve", *common, "--worker-mode", mode]
    elif name == "uvicorn":
        argv = [py, "-m", "uvicorn", *common]
    else:
        raise ValueError(f"unknown server {name!r}")
    return ServerSpec(name, argv, f"http://{LOCALHOST}:{port}/", cwd=app_dir,
                      expect_body=ORIGINAL)


def command_template(name: str, loop: str) -> str:
    spec = server_spec(name, 0, Path("APP_DIR"), loop)
    return spec.command.replace("--port 0", "--port PORT")


# --------------------------------------------------------------------------- load + reloads


@dataclass
class RunResult:
    server: str
    duration_s: float
    ok: int = 0
    failed: int = 0  # answered, but not 200
    refused: int = 0  # could not connect
    reset: int = 0  # closed/reset before a complete response
    timeouts: int = 0
    longest_gap_ms: float = 0.0
    switch_ms: list[float | None] = field(default_factory=list)  # per reload
    stale_after_switch: int = 0  # old-code answers to requests sent after the first new one
    final_code_served: bool = False
    reload_log_lines: int = 0
    first_errors: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return self.failed + self.refused + self.reset + self.timeouts

    @property
    def requests_per_sec(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0


async def _read_one(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip().lower()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection") == "close"


async def _load_with_reloads(url_port: int, pid: int, app_dir: Path, *, connections: int,
                             duration_s: float, reloads: int, result: RunResult) -> None:
    loop = asyncio.get_running_loop()
    request = f"GET / HTTP/1.1\r\nHost: {LOCALHOST}:{url_port}\r\n\r\n".encode()
    start = loop.time()
    stop_at = start + duration_s
    # (finished, sent, body) of every 200 answer; errors are counted where they happen.
    answers: list[tuple[float, float, bytes]] = []

    def note(kind: str, exc: BaseException | None = None) -> None:
        setattr(result, kind, getattr(result, kind) + 1)
        if len(result.first_errors) < 10:
            when = loop.time() - start
            result.first_errors.append(f"+{when:.3f}s {kind}: {type(exc).__name__ if exc else ''}"
                                       f" {exc or ''}".rstrip())

    async def client() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while loop.time() < stop_at:
            if writer is None:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(LOCALHOST, url_port), REQUEST_TIMEOUT)
                except TimeoutError as exc:
                    note("timeouts", exc)
                    continue
                except OSError as exc:
                    note("refused", exc)
                    await asyncio.sleep(0.01)  # a refused connect returns at once: do not spin
                    continue
            assert reader is not None
            sent = loop.time()
            close = True
            try:
                writer.write(request)
                await writer.drain()
                status, body, close = await asyncio.wait_for(_read_one(reader), REQUEST_TIMEOUT)
            except TimeoutError as exc:
                note("timeouts", exc)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                note("reset", exc)
            except (ValueError, IndexError) as exc:
                note("failed", exc)
            else:
                if status == 200:
                    result.ok += 1
                    answers.append((loop.time(), sent, body))
                else:
                    note("failed", RuntimeError(f"HTTP {status}"))
            if close:
                writer.close()
                writer = None

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
    result.duration_s = end - start

    answers.sort()
    points = [start, *(a[0] for a in answers), end]
    result.longest_gap_ms = round(max(b - a for a, b in itertools.pairwise(points)) * 1e3, 1)
    for i, at in enumerate(signalled, start=1):
        new = body_for(i)
        first = next((a for a in answers if a[0] >= at and a[2] == new), None)
        result.switch_ms.append(None if first is None else round((first[0] - at) * 1e3, 1))
        if first is not None:
            until = signalled[i] if i < len(signalled) else end
            result.stale_after_switch += sum(
                1 for a in answers if first[0] < a[1] < until and a[2] != new)
    result.final_code_served = bool(answers) and answers[-1][2] == body_for(reloads)


def run_one(name: str, settings: argparse.Namespace, loop_name: str) -> RunResult:
    app_dir = Path(tempfile.mkdtemp(prefix=f"bench-reload-{name}-"))
    try:
        write_app(app_dir, 0)
        spec = server_spec(name, free_port(), app_dir, loop_name)
        with running_server(spec, start_timeout=settings.start_timeout) as server:
            result = RunResult(server=name, duration_s=settings.duration)
            port = int(spec.url.rsplit(":", 1)[1].strip("/"))
            asyncio.run(_load_with_reloads(
                port, server.process.pid, app_dir, connections=settings.connections,
                duration_s=settings.duration, reloads=settings.reloads, result=result))
            crashed = server.process.poll() is not None
            log = server.log_path.read_text(errors="replace")
        if crashed:
            raise ServerError(f"{name} exited during the run\n{log[-2000:]}")
        marker = "Reloaded: generation" if name.startswith("devserve") else "Received SIGHUP"
        result.reload_log_lines = log.count(marker)
        return result
    finally:
        shutil.rmtree(app_dir, ignore_errors=True)


# --------------------------------------------------------------------------- reporting


def summarize(runs: list[RunResult], servers: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in servers:
        mine = [r for r in runs if r.server == name]
        switches = [s for r in mine for s in r.switch_ms if s is not None]
        summary[name] = {
            "rounds": len(mine),
            "requests_ok": sum(r.ok for r in mine),
            "requests_per_sec_median": round(median([r.requests_per_sec for r in mine]), 1),
            "failed": sum(r.failed for r in mine),
            "refused": sum(r.refused for r in mine),
            "reset": sum(r.reset for r in mine),
            "timeouts": sum(r.timeouts for r in mine),
            "errors_total": sum(r.errors for r in mine),
            "longest_gap_ms_max": max(r.longest_gap_ms for r in mine),
            "longest_gap_ms_median": round(median([r.longest_gap_ms for r in mine]), 1),
            "switch_ms_median": round(median(switches), 1) if switches else None,
            "switch_ms_max": max(switches) if switches else None,
            "reloads_never_switched": sum(s is None for r in mine for s in r.switch_ms),
            "stale_after_switch": sum(r.stale_after_switch for r in mine),
            "final_code_served": all(r.final_code_served for r in mine),
        }
    ratios: dict[str, dict[str, float | None]] = {}
    peer = summary.get("uvicorn")
    for name in servers:
        if name == "uvicorn" or peer is None:
            continue
        ours = summary[name]
        values = {
            "requests_per_sec": ratio(ours["requests_per_sec_median"],
                                      peer["requests_per_sec_median"]),
            "longest_gap": ratio(ours["longest_gap_ms_median"], peer["longest_gap_ms_median"]),
            "switch_time": (ratio(ours["switch_ms_median"], peer["switch_ms_median"])
                            if ours["switch_ms_median"] is not None
                            and peer["switch_ms_median"] is not None else None),
        }
        ratios[f"{name}/uvicorn"] = {k: None if v is None else round(v, 3)
                                     for k, v in values.items()}
    return {"servers": summary, "ratios": ratios}


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def print_report(servers: list[str], result: dict[str, Any]) -> None:
    s = result["servers"]
    headers = ["server", "ok", "req/s", "failed", "refused", "reset", "timeout",
               "longest gap ms", "switch ms (med/max)", "stale", "new code"]
    rows = [[
        name, _fmt(s[name]["requests_ok"]), _fmt(s[name]["requests_per_sec_median"]),
        _fmt(s[name]["failed"]), _fmt(s[name]["refused"]), _fmt(s[name]["reset"]),
        _fmt(s[name]["timeouts"]), _fmt(s[name]["longest_gap_ms_max"]),
        f"{_fmt(s[name]['switch_ms_median'])} / {_fmt(s[name]['switch_ms_max'])}",
        _fmt(s[name]["stale_after_switch"]),
        "yes" if s[name]["final_code_served"] else "NO",
    ] for name in servers]
    print()
    print(format_table(headers, rows))
    print()
    for pair, values in result["ratios"].items():
        parts = []
        for key, label in (("longest_gap", "longest gap"), ("switch_time", "switch time"),
                           ("requests_per_sec", "req/s")):
            v = values[key]
            parts.append(f"{label} {'n/a' if v is None else f'{v:.2f}x'}")
        print(f"{pair}: " + "   ".join(parts)
              + "   (gap and switch: lower is better; req/s: higher)")


def default_output() -> Path:
    return results_path("reload")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="SIGHUP reloads under keep-alive load: devserve (process, thread) vs uvicorn.")
    parser.add_argument("--rounds", type=int, help="rounds per server (default 1)")
    parser.add_argument("--duration", type=float, help="seconds of load per run (default 20)")
    parser.add_argument("--reloads", type=int, help="SIGHUPs per run, evenly spaced (default 5)")
    parser.add_argument("--connections", type=int, default=20, help="keep-alive clients (20)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated subset of {','.join(SERVERS)}")
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                        help="event loop for every server (auto: uvloop if importable)")
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--start-timeout", type=float, default=30.0, help="readiness deadline")
    parser.add_argument("--output", type=Path, help="JSON path (default benchmarks/results/...)")
    parser.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    args = parser.parse_args(argv)
    defaults = {"rounds": 1, "duration": 8.0, "reloads": 3} if args.quick else {
        "rounds": 1, "duration": 20.0, "reloads": 5}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rounds < 1 or args.duration <= 0 or args.reloads < 1 or args.connections < 1:
        parser.error("--rounds, --reloads, --connections must be >= 1 and --duration > 0")
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not servers or set(servers) - set(SERVERS):
        parser.error(f"--servers: choose from {', '.join(SERVERS)}")
    args.servers = list(dict.fromkeys(servers))
    return args


def main(argv: list[str] | None = None) -> int:
    sigterm_as_interrupt()
    args = parse_args(argv)
    loop_name = default_loop() if args.loop == "auto" else args.loop
    servers: list[str] = args.servers
    print(f"reload under load: {' vs '.join(servers)} | --workers 2 | loop {loop_name} | "
          f"{args.connections} keep-alive clients x {args.duration:g}s | "
          f"{args.reloads} x (edit + SIGHUP) | {args.rounds} round(s)")
    load_at_start = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    runs: list[RunResult] = []
    try:
        for round_no in range(args.rounds):
            shift = round_no % len(servers)
            for name in servers[shift:] + servers[:shift]:
                print(f"  round {round_no + 1}/{args.rounds}: {name:<17}", end="", flush=True)
                run = run_one(name, args, loop_name)
                runs.append(run)
                print(f"{run.ok:>7} ok  {run.errors:>4} errors  longest gap "
                      f"{run.longest_gap_ms:7.1f} ms  switch {run.switch_ms}", flush=True)
    except ServerError as exc:
        print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped, nothing written", file=sys.stderr)
        return 130
    result = summarize(runs, servers)
    print_report(servers, result)
    record = {
        "benchmark": "reload-under-load",
        "app": "copy of examples/hello.py, greeting edited before each SIGHUP",
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": {
            "rounds": args.rounds, "duration_s": args.duration, "reloads": args.reloads,
            "connections": args.connections, "workers": 2, "loop": loop_name,
            "client": "asyncio raw sockets, keep-alive, one request in flight per connection",
            "request_timeout_s": REQUEST_TIMEOUT,
            "order": "rotating, fresh process, port and app copy per run",
        },
        "commands": {name: command_template(name, loop_name) for name in servers},
        "machine": {
            **machine_info(packages=["devserve", "uvicorn", "h11", "uvloop", "httptools"]),
            # Other work on the box skews gaps and switch times: say how busy it was.
            "loadavg_at_start": load_at_start,
        },
        **result,
        "runs": [{**asdict(r), "requests_per_sec": round(r.requests_per_sec, 1)} for r in runs],
    }
    if not args.no_save:
        path = args.output or default_output()
        write_json(path, record)
        print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
