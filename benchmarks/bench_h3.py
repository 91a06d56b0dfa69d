"""HTTP/3 throughput: devserve (``--http3``) vs hypercorn (``--quic-bind``) over one QUIC
connection, sequential requests and 10 concurrent streams.

Both servers run ``examples/hello.py`` with one worker, the same certificate and loop, in
interleaved rounds within one invocation (fresh process and port each run). The load client is
aioquic in this process (``tests/apps/h3_client.py``): no h2load-style HTTP/3 tool is assumed.
A Python client is itself slow, so absolute numbers are client-bound and the ratio compresses
toward 1; the same client measures both servers. A 1 s warm-up on each connection is excluded.

Run from the repo root::

    python benchmarks/bench_h3.py             # 3 rounds x 2 scenarios x 5 s per server, ~2 min
    python benchmarks/bench_h3.py --quick     # 1 round x 2 s
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    LOCALHOST,
    REPO_ROOT,
    RESULTS_DIR,
    default_loop,
    format_table,
    free_port,
    host_label,
    machine_info,
    median,
    ratio,
    sigterm_as_interrupt,
    stop_process,
    write_json,
)
from bench_h2 import make_certificate

sys.path.insert(0, str(REPO_ROOT / "tests" / "apps"))
import h3_client  # the test suite's aioquic client

EXAMPLES = REPO_ROOT / "examples"
APP = "hello:app"
EXPECTED_BODY = b"Hello, world!"
SERVERS = ("devserve", "hypercorn")
SCENARIOS = {"sequential": 1, "concurrent-10": 10}


def server_argv(name: str, port: int, loop: str, cert: tuple[Path, Path]) -> list[str]:
    py = sys.executable
    if name == "devserve":
        return [py, "-m", "devserve", APP, "--host", LOCALHOST, "--port", str(port), "--http3",
                "--ssl-certfile", str(cert[0]), "--ssl-keyfile", str(cert[1]), "--workers", "1",
                "--loop", loop, "--no-access-log", "--tui", "off", "--log-level", "warning"]
    return [py, "-m", "hypercorn", APP, "--bind", f"{LOCALHOST}:{port}",
            "--quic-bind", f"{LOCALHOST}:{port}", "--certfile", str(cert[0]),
            "--keyfile", str(cert[1]), "--worker-class", loop, "--workers", "1",
            "--log-level", "warning"]


async def _ready(port: int, deadline: float, process: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            async with h3_client.h3_connect(LOCALHOST, port, 1.0) as client:
                r = await asyncio.wait_for(client.request("GET", "/"), 2.0)
                if r.status == 200 and bytes(r.body) == EXPECTED_BODY:
                    return time.monotonic() - started
        except (TimeoutError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("no HTTP/3 answer before the deadline")


async def _load(port: int, streams: int, duration: float, warmup: float) -> dict[str, Any]:
    """*streams* request loops on one connection; counts only after *warmup*."""
    async with h3_client.h3_connect(LOCALHOST, port) as client:
        counting_from = time.monotonic() + warmup
        stop_at = counting_from + duration
        done = errors = 0

        async def loop() -> None:
            nonlocal done, errors
            while (now := time.monotonic()) < stop_at:
                r = await client.request("GET", "/")
                if now >= counting_from:
                    if r.status == 200 and bytes(r.body) == EXPECTED_BODY:
                        done += 1
                    else:
                        errors += 1

        await asyncio.wait_for(asyncio.gather(*[loop() for _ in range(streams)]),
                               warmup + duration + 30)
        return {"requests": done, "errors": errors, "req_per_s": done / duration,
                "connection_survived": not client.terminated.done()}


def run_one(name: str, scenario: str, loop: str, cert: tuple[Path, Path], duration: float,
            log_dir: Path) -> dict[str, Any]:
    port = free_port()
    log = (log_dir / f"{name}-{scenario}-{port}.log").open("wb")
    process = subprocess.Popen(server_argv(name, port, loop, cert), cwd=EXAMPLES, stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"},
                               start_new_session=True)
    try:
        startup = asyncio.run(_ready(port, time.monotonic() + 30, process))
        result = asyncio.run(_load(port, SCENARIOS[scenario], duration, 1.0))
    finally:
        stop_process(process)
        log.close()
    return {"server": name, "scenario": scenario, "startup_s": round(startup, 3), **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="devserve vs hypercorn over HTTP/3.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    parser.add_argument("--loop", default=default_loop())
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 2.0
    sigterm_as_interrupt()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-h3-") as tmp:
        cert = make_certificate(Path(tmp))
        for rnd in range(args.rounds):
            order = SERVERS if rnd % 2 == 0 else SERVERS[::-1]
            for scenario in SCENARIOS:
                for name in order:
                    run = run_one(name, scenario, args.loop, cert, args.duration, Path(tmp))
                    run["round"] = rnd + 1
                    runs.append(run)
                    print(f"round {rnd + 1} {scenario:14} {name:10} "
                          f"{run['req_per_s']:8.0f} req/s  errors {run['errors']}", flush=True)
    summary: dict[str, dict[str, float]] = {}
    ratios: dict[str, float | None] = {}
    for scenario in SCENARIOS:
        summary[scenario] = {name: median([r["req_per_s"] for r in runs if r["server"] == name
                                           and r["scenario"] == scenario]) for name in SERVERS}
        ratios[scenario] = ratio(summary[scenario]["devserve"], summary[scenario]["hypercorn"])
    rows = [[scenario, f"{values['devserve']:.0f}", f"{values['hypercorn']:.0f}",
             f"{ratios[scenario]:.2f}x" if ratios[scenario] else "n/a"]
            for scenario, values in summary.items()]
    print(format_table(["scenario", "devserve req/s", "hypercorn req/s", "ratio"], rows))
    stem = f"h3-{dt.datetime.now().astimezone().date().isoformat()}-{host_label()}"
    output = args.output or RESULTS_DIR / f"{stem}.json"
    n = 2
    while args.output is None and output.exists():
        output = RESULTS_DIR / f"{stem}-{n}.json"
        n += 1
    write_json(output, {
        "benchmark": "h3", "app": APP, "loop": args.loop, "rounds": args.rounds,
        "duration_s": args.duration, "client": "aioquic (tests/apps/h3_client.py), one "
        "connection per run, in the benchmark process",
        "goal": "devserve >= 1.5x hypercorn req/s",
        "servers": summary, "ratios_devserve_over_hypercorn": ratios, "runs": runs,
        "commands": {name: " ".join(server_argv(name, 0, args.loop, (Path("C"), Path("K"))))
                     for name in SERVERS},
        "machine": machine_info(packages=["devserve", "hypercorn", "aioquic", "uvloop"]),
    })
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
