"""WSGI throughput and tail latency: devserve's SyncWorker threads vs gunicorn (gthread) and
waitress, all serving the Flask example (``examples/flask_app.py``, ``GET /``) with one process
and 4 threads.

The same method as ``bench_http.py``: interleaved rounds with a rotating order, a fresh process
on a fresh port per run, a discarded warm-up, then wrk; per-server medians and devserve/peer
ratios (req/s and p99). A peer that is not installed is left out with a note.

Run from the repo root::

    python benchmarks/bench_wsgi.py              # 3 rounds x 3 servers x (2 s + 10 s), ~2 min
    python benchmarks/bench_wsgi.py --quick      # about 30 s smoke run
    python benchmarks/bench_wsgi.py --servers devserve,gunicorn --no-save
"""

from __future__ import annotations

import importlib.util
import sys

from _common import (
    EXAMPLES,
    LOAD_METRICS,
    LOCALHOST,
    Benchmark,
    ServerSpec,
    load_line,
)

APP = "flask_app:app"
EXPECTED_BODY = b"Hello from Flask"

BENCH = Benchmark(
    kind="wsgi",
    title=f"WSGI {APP} (GET /)",
    description="devserve SyncWorkers vs gunicorn gthread / waitress on the Flask example.",
    servers=("devserve", "gunicorn", "waitress"),
    full={"rounds": 3, "duration": 10, "warmup": 2, "connections": 50, "server_threads": 4},
    quick={"rounds": 2, "duration": 3, "warmup": 1},
    metrics=LOAD_METRICS,
    packages=("devserve", "flask", "werkzeug", "gunicorn", "waitress"),
    tools={"wrk": ("wrk", "-v")},
    http_load=True,
)


def server_spec(name: str, port: int, threads: int) -> ServerSpec:
    """One process, *threads* threads, no access log, warnings only, 127.0.0.1:*port*."""
    url = f"http://{LOCALHOST}:{port}/"
    py = sys.executable
    if name == "devserve":
        argv = [py, "-m", "devserve", APP, "--app-dir", str(EXAMPLES), "--host", LOCALHOST,
                "--port", str(port), "--interface", "wsgi", "--workers", "1",
                "--threads", str(threads), "--no-access-log", "--log-level", "warning",
                "--tui", "off"]
        return ServerSpec(name, argv, url, expect_body=EXPECTED_BODY)
    if name == "gunicorn":
        # --threads > 1 selects the gthread worker; gunicorn logs no access lines by default.
        argv = [py, "-m", "gunicorn", APP, "--chdir", str(EXAMPLES), "--bind",
                f"{LOCALHOST}:{port}", "--workers", "1", "--threads", str(threads),
                "--log-level", "warning"]
        return ServerSpec(name, argv, url, expect_body=EXPECTED_BODY)
    # No --app-dir: waitress-serve imports relative to its cwd. It writes no access log.
    argv = [py, "-m", "waitress", f"--listen={LOCALHOST}:{port}", f"--threads={threads}", APP]
    return ServerSpec(name, argv, url, cwd=EXAMPLES, expect_body=EXPECTED_BODY)


def main(argv: list[str] | None = None) -> int:
    parser = BENCH.parser()
    parser.add_argument("--server-threads", type=int,
                        help="threads of every server's single process (4)")
    args = BENCH.parse(parser, argv)
    if args.server_threads < 1:
        parser.error("--server-threads must be >= 1")
    if importlib.util.find_spec("flask") is None:
        print("flask is not installed (pip install flask)", file=sys.stderr)
        return 2
    missing = [p for p in args.servers[1:] if importlib.util.find_spec(p) is None]
    args.servers = [s for s in args.servers if s not in missing]
    load = BENCH.http_load_of(args)

    def one_run(name: str, _: str | None) -> dict[str, object]:
        return BENCH.load_run(args, lambda port: server_spec(name, port, args.server_threads))

    return BENCH.run(
        args, one_run, line=load_line,
        header=f"1 process x {args.server_threads} threads | {load.command(args.duration)}"
               f" | warm-up {args.warmup}s",
        notes=[f"{peer} is not installed; left out (pip install {peer})" for peer in missing],
        settings={"server_processes": 1, "server_threads": args.server_threads},
        commands={**{name: server_spec(name, 0, args.server_threads).template()
                     for name in args.servers}, "load": load.command(args.duration)},
        extra={"app": "examples/flask_app.py (GET /)"},
    )


if __name__ == "__main__":
    sys.exit(main())
