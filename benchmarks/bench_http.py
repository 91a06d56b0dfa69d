"""HTTP/1.1 (h11) throughput and tail latency: devserve vs uvicorn (and optionally hypercorn).

Both servers run ``examples/hello.py`` with the same flags, one worker, in interleaved rounds
within one invocation, so machine noise (thermal state, background jobs) hits both alike.
The order rotates each round (d,u / u,d / d,u ...) so neither server always goes first.
Each run uses a fresh process on a fresh port; a short discarded warm-up precedes the
measurement. The report is the per-server median across rounds and the devserve/peer ratio.

Run from the repo root::

    python benchmarks/bench_http.py            # 3 rounds x (2 s warm-up + 10 s), ~75 s
    python benchmarks/bench_http.py --quick    # about 20 s smoke run
    python benchmarks/bench_http.py --peers uvicorn,hypercorn
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    LOCALHOST,
    REPO_ROOT,
    RESULTS_DIR,
    LoadResult,
    ServerError,
    ServerSpec,
    default_loop,
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
APP = "hello:app"
EXPECTED_BODY = b"Hello, world!"
PEERS = ("uvicorn", "hypercorn")
# Hidden override for developing this script before devserve serves: point the "devserve"
# slot at another uvicorn-compatible CLI, e.g. DEVSERVE_BENCH_CMD="python -m uvicorn".
OVERRIDE_ENV = "DEVSERVE_BENCH_CMD"


@dataclass
class Settings:
    rounds: int
    duration_s: int
    warmup_s: int
    connections: int
    threads: int
    loop: str
    load: str  # "wrk" | "builtin"
    start_timeout: float


def _uvicorn_style(prefix: list[str], port: int, loop: str) -> list[str]:
    """uvicorn's flags, which devserve accepts verbatim (its CLI is a drop-in)."""
    return [
        *prefix,
        APP,
        "--app-dir",
        str(EXAMPLES),
        "--host",
        LOCALHOST,
        "--port",
        str(port),
        "--http",
        "h11",
        "--loop",
        loop,
        "--no-access-log",
        "--log-level",
        "warning",
        "--workers",
        "1",
    ]


def server_spec(name: str, port: int, loop: str, devserve_prefix: list[str]) -> ServerSpec:
    url = f"http://{LOCALHOST}:{port}/"
    py = sys.executable
    if name == "devserve":
        argv = _uvicorn_style(devserve_prefix, port, loop)
        return ServerSpec(name, argv, url, cwd=REPO_ROOT, expect_body=EXPECTED_BODY)
    if name == "uvicorn":
        argv = _uvicorn_style([py, "-m", "uvicorn"], port, loop)
        return ServerSpec(name, argv, url, cwd=REPO_ROOT, expect_body=EXPECTED_BODY)
    if name == "hypercorn":
        # No --app-dir: hypercorn imports relative to its cwd. HTTP/1.1 over plain TCP is h11
        # in hypercorn; the access log is off unless --access-logfile is given.
        argv = [
            py,
            "-m",
            "hypercorn",
            APP,
            "--bind",
            f"{LOCALHOST}:{port}",
            "--worker-class",
            loop,
            "--log-level",
            "warning",
            "--workers",
            "1",
        ]
        return ServerSpec(name, argv, url, cwd=EXAMPLES, expect_body=EXPECTED_BODY)
    raise ValueError(f"unknown server {name!r}")


def command_template(name: str, loop: str, devserve_prefix: list[str]) -> dict[str, str]:
    """The exact command with PORT standing in for the per-run port, and where it ran."""
    spec = server_spec(name, 0, loop, devserve_prefix)
    command = spec.command.replace(f"{LOCALHOST}:0", f"{LOCALHOST}:PORT")
    return {"command": command.replace("--port 0", "--port PORT"), "cwd": str(spec.cwd)}


def measure(url: str, settings: Settings) -> LoadResult:
    def load(duration_s: int) -> LoadResult:
        if settings.load == "wrk":
            return run_wrk(
                url,
                threads=settings.threads,
                connections=settings.connections,
                duration_s=duration_s,
            )
        return run_builtin_load(url, connections=settings.connections, duration_s=duration_s)

    if settings.warmup_s > 0:
        load(settings.warmup_s)  # lets the server's caches and the kernel settle; discarded
    return load(settings.duration_s)


def run_rounds(
    servers: list[str], settings: Settings, devserve_prefix: list[str]
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for round_no in range(settings.rounds):
        shift = round_no % len(servers)
        for name in servers[shift:] + servers[:shift]:
            spec = server_spec(name, free_port(), settings.loop, devserve_prefix)
            print(f"  round {round_no + 1}/{settings.rounds}: {name:<9} ", end="", flush=True)
            with running_server(spec, start_timeout=settings.start_timeout) as server:
                result = measure(spec.url, settings)
                crashed = server.process.poll() is not None
            if crashed:
                raise ServerError(f"{name} exited during the load run\n{server.log_tail()}")
            note = f"  ({result.error_count} errors!)" if result.error_count else ""
            print(
                f"{result.requests_per_sec:>10,.0f} req/s  p99 {result.p99_ms:7.2f} ms"
                f"  (ready in {server.startup_s:.2f}s){note}",
                flush=True,
            )
            runs.append(
                {
                    "round": round_no + 1,
                    "server": name,
                    "command": spec.command,
                    "cwd": str(spec.cwd),
                    "startup_s": round(server.startup_s, 3),
                    **result.to_json(),
                }
            )
    return runs


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def print_report(servers: list[str], result: dict[str, Any]) -> None:
    summary = result["servers"]
    rows = [
        [
            name,
            f"{summary[name]['requests_per_sec_median']:,.0f}",
            f"{summary[name]['p50_ms_median']:.2f}",
            f"{summary[name]['p99_ms_median']:.2f}",
            str(summary[name]["errors_total"]),
        ]
        for name in servers
    ]
    print()
    print(format_table(["server", "req/s (median)", "p50 ms", "p99 ms", "errors"], rows))
    print()
    for peer, values in result["ratios_devserve_over"].items():
        print(
            f"devserve/{peer}: req/s {_fmt_ratio(values['requests_per_sec'])} (higher is better)"
            f"   p99 {_fmt_ratio(values['p99'])} (lower is better)"
        )


def default_output(overridden: bool) -> Path:
    """A run whose "devserve" slot was pointed at another server is not a devserve result, so
    it goes to the temp dir instead of benchmarks/results/."""
    return results_path("http-h11", Path(tempfile.gettempdir()) if overridden else None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="devserve vs uvicorn on examples/hello.py over HTTP/1.1 (h11), side by side.",
    )
    parser.add_argument("--rounds", type=int, help="rounds per server (default 3; quick: 2)")
    parser.add_argument(
        "--duration", type=int, help="seconds of load per run (default 10; quick: 3)"
    )
    parser.add_argument(
        "--warmup", type=int, help="discarded warm-up seconds per run (default 2; quick: 1)"
    )
    parser.add_argument("--connections", type=int, default=50, help="open connections (50)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument(
        "--loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="event loop for every server (auto: uvloop if importable)",
    )
    parser.add_argument(
        "--load",
        choices=["auto", "wrk", "builtin"],
        default="auto",
        help="load generator (auto: wrk if installed, else the built-in asyncio one)",
    )
    parser.add_argument(
        "--peers",
        default="uvicorn",
        help=f"comma-separated servers to compare against, from {','.join(PEERS)} (uvicorn)",
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (~20 s)")
    parser.add_argument("--start-timeout", type=float, default=20.0, help="readiness deadline")
    parser.add_argument("--output", type=Path, help="JSON path (default benchmarks/results/...)")
    parser.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    parser.add_argument("--devserve-cmd", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = {"rounds": 2, "duration": 3, "warmup": 1}
    full = {"rounds": 3, "duration": 10, "warmup": 2}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0 or args.connections < 1:
        parser.error("--rounds, --duration, --connections must be >= 1 and --warmup >= 0")
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown or not peers:
        parser.error(f"--peers: choose from {', '.join(PEERS)} (got {args.peers!r})")
    args.peers = list(dict.fromkeys(peers))
    return args


def main(argv: list[str] | None = None) -> int:
    sigterm_as_interrupt()
    args = parse_args(argv)
    override = args.devserve_cmd or os.environ.get(OVERRIDE_ENV)
    devserve_prefix = shlex.split(override) if override else [sys.executable, "-m", "devserve"]
    load = args.load if args.load != "auto" else ("wrk" if wrk_available() else "builtin")
    if load == "wrk" and not wrk_available():
        print("wrk is not installed; use --load builtin", file=sys.stderr)
        return 2
    path = None if args.no_save else (args.output or default_output(bool(override)))
    if path is not None and override and RESULTS_DIR.resolve() in path.resolve().parents:
        print(f"refusing {path}: results/ holds real devserve results only", file=sys.stderr)
        return 2
    settings = Settings(
        rounds=args.rounds,
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        threads=args.threads,
        loop=default_loop() if args.loop == "auto" else args.loop,
        load=load,
        start_timeout=args.start_timeout,
    )
    servers = ["devserve", *args.peers]
    load_cmd = (
        shlex.join(
            wrk_command(
                "http://127.0.0.1:PORT/",
                threads=settings.threads,
                connections=settings.connections,
                duration_s=settings.duration_s,
            )
        )
        if load == "wrk"
        else f"builtin-asyncio connections={settings.connections} duration={settings.duration_s}s"
    )
    print(
        f"HTTP/1.1 (h11) {APP}: {' vs '.join(servers)} | loop {settings.loop} | {load_cmd}"
        f" | {settings.rounds} rounds, warm-up {settings.warmup_s}s"
    )
    if override:
        print(f"  NOTE: devserve slot overridden by {override!r}; not a devserve result")
    if load == "builtin":
        print("  NOTE: wrk not used; the Python load generator caps req/s, compare ratios only")

    try:
        runs = run_rounds(servers, settings, devserve_prefix)
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
        "benchmark": "http-h11",
        "app": f"examples/{APP}",
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": {
            "rounds": settings.rounds,
            "duration_s": settings.duration_s,
            "warmup_s": settings.warmup_s,
            "connections": settings.connections,
            "threads": settings.threads,
            "loop": settings.loop,
            "http": "h11",
            "workers": 1,
            "load_generator": "wrk" if load == "wrk" else "builtin-asyncio",
            "order": "rotating interleave, fresh process and port per run",
        },
        "devserve_cmd_override": override,
        "commands": {
            **{name: command_template(name, settings.loop, devserve_prefix) for name in servers},
            "load": load_cmd,
        },
        "machine": machine_info(
            packages=["devserve", "uvicorn", "h11", "uvloop", "hypercorn", "httptools"],
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
