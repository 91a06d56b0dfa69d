"""WSGI throughput and tail latency: devserve's SyncWorker threads vs gunicorn (gthread) and
waitress, all serving the Flask example (``examples/flask_app.py``, ``GET /``) with one process
and 4 threads.

Every server runs in interleaved rounds within one invocation, the order rotating each round, a
fresh process on a fresh port per run, a discarded warm-up, then wrk. The report is the
per-server median across rounds and the devserve/peer ratios (req/s and p99).

Run from the repo root::

    python benchmarks/bench_wsgi.py              # 3 rounds x 3 servers x (2 s + 10 s), ~2 min
    python benchmarks/bench_wsgi.py --quick      # about 30 s smoke run
    python benchmarks/bench_wsgi.py --peers gunicorn --no-save
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    LOCALHOST,
    REPO_ROOT,
    LoadResult,
    ServerError,
    ServerSpec,
    format_table,
    free_port,
    machine_info,
    results_path,
    run_builtin_load,
    run_wrk,
    running_server,
    sigterm_as_interrupt,
    summarize_load_runs,
    write_json,
    wrk_available,
    wrk_command,
)

EXAMPLES = REPO_ROOT / "examples"
APP = "flask_app:app"
EXPECTED_BODY = b"Hello from Flask"
PEERS = ("gunicorn", "waitress")


@dataclass
class Settings:
    rounds: int
    duration_s: int
    warmup_s: int
    connections: int
    wrk_threads: int
    server_threads: int
    load: str  # "wrk" | "builtin"
    start_timeout: float


def server_spec(name: str, port: int, threads: int) -> ServerSpec:
    """One process, *threads* threads, no access log, warnings only, 127.0.0.1:*port*."""
    url = f"http://{LOCALHOST}:{port}/"
    py = sys.executable
    if name == "devserve":
        argv = [py, "-m", "devserve", APP, "--app-dir", str(EXAMPLES), "--host", LOCALHOST,
                "--port", str(port), "--interface", "wsgi", "--workers", "1",
                "--threads", str(threads), "--no-access-log", "--log-level", "warning",
                "--tui", "off"]
        return ServerSpec(name, argv, url, cwd=REPO_ROOT, expect_body=EXPECTED_BODY)
    if name == "gunicorn":
        # --threads > 1 selects the gthread worker; gunicorn logs no access lines by default.
        argv = [py, "-m", "gunicorn", APP, "--chdir", str(EXAMPLES), "--bind",
                f"{LOCALHOST}:{port}", "--workers", "1", "--threads", str(threads),
                "--log-level", "warning"]
        return ServerSpec(name, argv, url, cwd=REPO_ROOT, expect_body=EXPECTED_BODY)
    if name == "waitress":
        # No --app-dir: waitress-serve imports relative to its cwd. It writes no access log.
        argv = [py, "-m", "waitress", f"--listen={LOCALHOST}:{port}", f"--threads={threads}",
                APP]
        return ServerSpec(name, argv, url, cwd=EXAMPLES, expect_body=EXPECTED_BODY)
    raise ValueError(f"unknown server {name!r}")


def command_template(name: str, threads: int) -> dict[str, str]:
    """The exact command with PORT standing in for the per-run port, and where it ran."""
    spec = server_spec(name, 0, threads)
    command = spec.command.replace(f"{LOCALHOST}:0", f"{LOCALHOST}:PORT")
    return {"command": command.replace("--port 0", "--port PORT"), "cwd": str(spec.cwd)}


def measure(url: str, settings: Settings) -> LoadResult:
    def load(duration_s: int) -> LoadResult:
        if settings.load == "wrk":
            return run_wrk(url, threads=settings.wrk_threads,
                           connections=settings.connections, duration_s=duration_s)
        return run_builtin_load(url, connections=settings.connections, duration_s=duration_s)

    if settings.warmup_s > 0:
        load(settings.warmup_s)  # discarded
    return load(settings.duration_s)


def run_rounds(servers: list[str], settings: Settings) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for round_no in range(settings.rounds):
        shift = round_no % len(servers)
        for name in servers[shift:] + servers[:shift]:
            spec = server_spec(name, free_port(), settings.server_threads)
            print(f"  round {round_no + 1}/{settings.rounds}: {name:<9} ", end="", flush=True)
            with running_server(spec, start_timeout=settings.start_timeout) as server:
                result = measure(spec.url, settings)
                crashed = server.process.poll() is not None
            if crashed:
                raise ServerError(f"{name} exited during the load run\n{server.log_tail()}")
            note = f"  ({result.error_count} errors!)" if result.error_count else ""
            print(f"{result.requests_per_sec:>10,.0f} req/s  p99 {result.p99_ms:7.2f} ms"
                  f"  (ready in {server.startup_s:.2f}s){note}", flush=True)
            runs.append({"round": round_no + 1, "server": name, "command": spec.command,
                         "cwd": str(spec.cwd), "startup_s": round(server.startup_s, 3),
                         **result.to_json()})
    return runs


def print_report(servers: list[str], result: dict[str, Any]) -> None:
    summary = result["servers"]
    rows = [[name, f"{summary[name]['requests_per_sec_median']:,.0f}",
             f"{summary[name]['p50_ms_median']:.2f}", f"{summary[name]['p99_ms_median']:.2f}",
             str(summary[name]["errors_total"])] for name in servers]
    print()
    print(format_table(["server", "req/s (median)", "p50 ms", "p99 ms", "errors"], rows))
    print()
    for peer, values in result["ratios_devserve_over"].items():
        rps, p99 = values["requests_per_sec"], values["p99"]
        print(f"devserve/{peer}: req/s {'n/a' if rps is None else f'{rps:.2f}x'} (higher is "
              f"better)   p99 {'n/a' if p99 is None else f'{p99:.2f}x'} (lower is better)")


def default_output() -> Path:
    return results_path("wsgi")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="devserve SyncWorkers vs gunicorn gthread / waitress on the Flask example.")
    parser.add_argument("--rounds", type=int, help="rounds per server (default 3; quick: 2)")
    parser.add_argument("--duration", type=int, help="seconds of load per run (10; quick: 3)")
    parser.add_argument("--warmup", type=int, help="discarded warm-up seconds (2; quick: 1)")
    parser.add_argument("--connections", type=int, default=50, help="open connections (50)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--server-threads", type=int, default=4,
                        help="threads of every server's single process (4)")
    parser.add_argument("--load", choices=["auto", "wrk", "builtin"], default="auto",
                        help="load generator (auto: wrk if installed)")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help=f"comma-separated peers from {','.join(PEERS)} (all that import)")
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--start-timeout", type=float, default=20.0, help="readiness deadline")
    parser.add_argument("--output", type=Path, help="JSON path (default benchmarks/results/...)")
    parser.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    args = parser.parse_args(argv)
    defaults = {"rounds": 2, "duration": 3, "warmup": 1} if args.quick else {
        "rounds": 3, "duration": 10, "warmup": 2}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.rounds, args.duration, args.connections, args.server_threads) < 1 or \
            args.warmup < 0:
        parser.error("--rounds, --duration, --connections, --server-threads must be >= 1")
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown or not peers:
        parser.error(f"--peers: choose from {', '.join(PEERS)} (got {args.peers!r})")
    args.peers = list(dict.fromkeys(peers))
    return args


def main(argv: list[str] | None = None) -> int:
    sigterm_as_interrupt()
    args = parse_args(argv)
    load = args.load if args.load != "auto" else ("wrk" if wrk_available() else "builtin")
    if load == "wrk" and not wrk_available():
        print("wrk is not installed; use --load builtin", file=sys.stderr)
        return 2
    missing = [p for p in args.peers if importlib.util.find_spec(p) is None]
    for peer in missing:
        print(f"  NOTE: {peer} is not installed; left out (pip install {peer})")
    peers = [p for p in args.peers if p not in missing]
    if importlib.util.find_spec("flask") is None:
        print("flask is not installed (pip install flask)", file=sys.stderr)
        return 2
    settings = Settings(rounds=args.rounds, duration_s=args.duration, warmup_s=args.warmup,
                        connections=args.connections, wrk_threads=args.threads,
                        server_threads=args.server_threads, load=load,
                        start_timeout=args.start_timeout)
    servers = ["devserve", *peers]
    load_cmd = (
        shlex.join(wrk_command("http://127.0.0.1:PORT/", threads=settings.wrk_threads,
                               connections=settings.connections,
                               duration_s=settings.duration_s))
        if load == "wrk"
        else f"builtin-asyncio connections={settings.connections} duration={settings.duration_s}s"
    )
    print(f"WSGI {APP} (GET /): {' vs '.join(servers)} | 1 process x {settings.server_threads}"
          f" threads | {load_cmd} | {settings.rounds} rounds, warm-up {settings.warmup_s}s")
    if load == "builtin":
        print("  NOTE: wrk not used; the Python load generator caps req/s, compare ratios only")
    path = None if args.no_save else (args.output or default_output())
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

    try:
        runs = run_rounds(servers, settings)
    except ServerError as exc:
        print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        print(f"\nload run failed (servers stopped): {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped, nothing written", file=sys.stderr)
        return 130

    result = summarize_load_runs(servers, runs)
    print_report(servers, result)
    record = {
        "benchmark": "wsgi",
        "app": "examples/flask_app.py (GET /)",
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": {
            "rounds": settings.rounds,
            "duration_s": settings.duration_s,
            "warmup_s": settings.warmup_s,
            "connections": settings.connections,
            "wrk_threads": settings.wrk_threads,
            "server_processes": 1,
            "server_threads": settings.server_threads,
            "load_generator": "wrk" if load == "wrk" else "builtin-asyncio",
            "order": "rotating interleave, fresh process and port per run",
        },
        "commands": {**{name: command_template(name, settings.server_threads)
                        for name in servers}, "load": load_cmd},
        "loadavg_1_5_15": {"before": load_before,
                           "after": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "machine": machine_info(
            packages=["devserve", "flask", "werkzeug", "gunicorn", "waitress"],
            tools={"wrk": ["wrk", "-v"]},
        ),
        **result,
        "runs": runs,
    }
    if path is not None:
        write_json(path, record)
        print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
