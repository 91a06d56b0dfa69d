"""HTTP/1.1 (h11) throughput and tail latency: devserve vs uvicorn (and optionally hypercorn).

Every server runs ``examples/hello.py`` with the same flags and one worker, in interleaved
rounds with a rotating order, a fresh process on a fresh port per run, a discarded warm-up,
then wrk (or the built-in load generator). The report is the per-server median across rounds
and the devserve/peer ratios.

Run from the repo root::

    python benchmarks/bench_http.py            # 3 rounds x (2 s warm-up + 10 s), ~75 s
    python benchmarks/bench_http.py --quick    # about 20 s smoke run
    python benchmarks/bench_http.py --servers devserve,uvicorn,hypercorn
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from _common import (
    EXAMPLES,
    LOAD_METRICS,
    LOCALHOST,
    REPO_ROOT,
    Benchmark,
    ServerSpec,
    load_line,
)

APP = "hello:app"
EXPECTED_BODY = b"Hello, world!"
# Hidden override for developing this script before devserve serves: point the "devserve"
# slot at another uvicorn-compatible CLI, e.g. DEVSERVE_BENCH_CMD="python -m uvicorn".
OVERRIDE_ENV = "DEVSERVE_BENCH_CMD"

BENCH = Benchmark(
    kind="http-h11",
    title=f"HTTP/1.1 (h11) {APP}",
    description="devserve vs uvicorn on examples/hello.py over HTTP/1.1 (h11), side by side.",
    servers=("devserve", "uvicorn", "hypercorn"),
    default_servers=("devserve", "uvicorn"),
    full={"rounds": 3, "duration": 10, "warmup": 2, "connections": 50},
    quick={"rounds": 2, "duration": 3, "warmup": 1},
    metrics=LOAD_METRICS,
    packages=("devserve", "uvicorn", "h11", "uvloop", "hypercorn", "httptools"),
    tools={"wrk": ("wrk", "-v")},
    loop=True,
    http_load=True,
)


def server_spec(name: str, port: int, loop: str, devserve_prefix: list[str]) -> ServerSpec:
    url = f"http://{LOCALHOST}:{port}/"
    if name == "hypercorn":
        # No --app-dir: hypercorn imports relative to its cwd. HTTP/1.1 over plain TCP is h11
        # in hypercorn; the access log is off unless --access-logfile is given.
        argv = [sys.executable, "-m", "hypercorn", APP, "--bind", f"{LOCALHOST}:{port}",
                "--worker-class", loop, "--log-level", "warning", "--workers", "1"]
        return ServerSpec(name, argv, url, cwd=EXAMPLES, expect_body=EXPECTED_BODY)
    # uvicorn's flags, which devserve accepts verbatim (its CLI is a drop-in).
    prefix = devserve_prefix if name == "devserve" else [sys.executable, "-m", "uvicorn"]
    argv = [*prefix, APP, "--app-dir", str(EXAMPLES), "--host", LOCALHOST, "--port", str(port),
            "--http", "h11", "--loop", loop, "--no-access-log", "--log-level", "warning",
            "--workers", "1"]
    return ServerSpec(name, argv, url, cwd=REPO_ROOT, expect_body=EXPECTED_BODY)


def main(argv: list[str] | None = None) -> int:
    parser = BENCH.parser()
    parser.add_argument("--devserve-cmd", help=argparse.SUPPRESS)
    args = BENCH.parse(parser, argv)
    override = args.devserve_cmd or os.environ.get(OVERRIDE_ENV)
    prefix = shlex.split(override) if override else [sys.executable, "-m", "devserve"]
    load = BENCH.http_load_of(args)

    def one_run(name: str, _: str | None) -> dict[str, object]:
        return BENCH.load_run(args, lambda port: server_spec(name, port, args.loop, prefix))

    note = f"devserve slot overridden by {override!r}; not a devserve result"
    return BENCH.run(
        args, one_run, line=load_line, scratch=bool(override), notes=[note] if override else [],
        header=f"loop {args.loop} | {load.command(args.duration)} | warm-up {args.warmup}s",
        settings={"http": "h11", "workers": 1},
        commands={**{name: server_spec(name, 0, args.loop, prefix).template()
                     for name in args.servers}, "load": load.command(args.duration)},
        extra={"app": f"examples/{APP}", "devserve_cmd_override": override},
    )


if __name__ == "__main__":
    sys.exit(main())
