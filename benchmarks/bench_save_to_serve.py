"""Save-to-serve latency and failed requests during reloads: devserve vs ``uvicorn --reload``.

For each app (the dependency-free ``examples/hello.py`` and ``examples/starlette_app.py``) and each
server, in one invocation:

1. **Save to serve.** The app file is rewritten with a new response text; a client polls ``GET /``
   every 5 ms (a fresh connection each time) until the new text is served. The time from the
   write to the first new response is one sample; 12 edits by default (after one unmeasured
   warm-up edit that also proves the watcher is live). Reported: p50, p90, max.
2. **Reloads under keep-alive load.** 20 keep-alive clients (one request in flight each, no
   pipelining, back to back) run while the app is edited 5 times; after each edit the driver
   waits until the new text is served, then keeps the load on for a 1 s tail so the previous
   generation's drain happens under load too. Every request that does not get a complete
   ``200`` is a failure, classified as connect / write / read (reset or closed mid-response,
   including a kept-alive connection the server closed) / timeout / status.

Each server gets its own copy of the app in its own temporary directory (so one server's
watcher never sees the other's edits), a fresh port, and is stopped afterwards no matter what.
Both run with their defaults for reloading (devserve: a 10 ms quiet period, 50 ms once a batch
holds several files; uvicorn: watchfiles with ``--reload-delay 0.25``);
``--uvicorn-reload-delay`` changes uvicorn's.

Run from the repo root::

    python benchmarks/bench_save_to_serve.py              # ~2 minutes
    python benchmarks/bench_save_to_serve.py --quick      # 5 edits, 2 reloads, ~40 s
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    EXAMPLES,
    LOCALHOST,
    Benchmark,
    Metric,
    RunningServer,
    ServerError,
    ServerSpec,
    counts,
    pick,
)
from _load import Http1Client, get_once, new_errors, percentile

POLL_S = 0.005
SERVE_DEADLINE_S = 20.0


def _merged(counts: list[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for count in counts:
        total.update(count)
    return dict(total)


BENCH = Benchmark(
    kind="save-to-serve",
    title="save-to-serve",
    description="Edit-to-new-response latency and failed requests during reloads, "
                "devserve --reload vs uvicorn --reload, on hello and Starlette apps.",
    servers=("devserve", "uvicorn"),
    full={"rounds": 1, "connections": 20, "edits": 12, "reloads": 5},
    quick={"edits": 5, "reloads": 2},
    metrics=(
        Metric("p50_ms_median", lambda r: r["save_to_serve"]["p50_ms"], label="p50 ms",
               fmt="{:.0f}", better="lower"),
        Metric("p90_ms_median", lambda r: r["save_to_serve"]["p90_ms"], label="p90 ms",
               fmt="{:.0f}"),
        Metric("max_ms", lambda r: r["save_to_serve"]["max_ms"], fold=max, label="max ms",
               fmt="{:.0f}"),
        Metric("missed", lambda r: r["save_to_serve"]["missed"], fold=sum, label="missed",
               fmt="{}"),
        Metric("under_load_max_ms",
               lambda r: [v for v in r["under_load"]["save_to_serve_ms"] if v is not None],
               fold=lambda v: max(v, default=None), label="max under load", fmt="{:.0f}"),
        Metric("requests", lambda r: r["under_load"]["requests"], fold=sum, label="requests",
               fmt="{}"),
        Metric("failed", lambda r: r["under_load"]["failed"], fold=sum, label="failed",
               fmt="{}"),
        Metric("failures", lambda r: r["under_load"]["errors"], fold=_merged, label="failures"),
    ),
    packages=("devserve", "uvicorn", "starlette", "watchfiles", "h11", "uvloop", "httptools"),
    aliases={"connections": ("--clients",)},
    variant_key="app",
    start_timeout=30.0,
)


@dataclass(frozen=True)
class AppCase:
    """An example app copied into a project dir, and how to edit its response text."""

    name: str
    module: str  # file stem in examples/
    original: str  # the exact source text an edit replaces
    first_body: bytes

    def edited(self, source: str, marker: str) -> str:
        return source.replace(self.original, self.replacement(marker))

    def replacement(self, marker: str) -> str:
        if self.name == "hello":
            return f'HELLO = b"Hello, {marker}!"'
        return f'PlainTextResponse("Hello from Starlette, {marker}")'


APPS = {
    "hello": AppCase("hello", "hello", 'HELLO = b"Hello, world!"', b"Hello, world!"),
    "starlette": AppCase("starlette", "starlette_app",
                         'PlainTextResponse("Hello from Starlette")', b"Hello from Starlette"),
}


def server_spec(server: str, case: AppCase, project: Path, port: int,
                uvicorn_reload_delay: float | None) -> ServerSpec:
    common = [f"{case.module}:app", "--app-dir", str(project), "--host", LOCALHOST,
              "--port", str(port), "--no-access-log"]
    if server == "devserve":
        argv = [sys.executable, "-m", "devserve", "--reload", *common, "--tui", "off"]
    else:
        argv = [sys.executable, "-m", "uvicorn", "--reload", *common, "--reload-dir",
                str(project)]
        if uvicorn_reload_delay is not None:
            argv += ["--reload-delay", str(uvicorn_reload_delay)]
    return ServerSpec(server, argv, f"http://{LOCALHOST}:{port}/", cwd=project,
                      expect_body=case.first_body)


async def wait_for_body(port: int, needle: bytes, deadline_s: float = SERVE_DEADLINE_S
                        ) -> float | None:
    """Poll every 5 ms until a 200 whose body contains *needle*; seconds, or None on timeout."""
    start = time.perf_counter()
    while time.perf_counter() - start < deadline_s:
        answer = await get_once(port)
        if answer is not None and answer[0] == 200 and needle in answer[1]:
            return time.perf_counter() - start
        await asyncio.sleep(POLL_S)
    return None


class Editor:
    """Rewrites the project's app file with a fresh marker each time."""

    def __init__(self, case: AppCase, path: Path) -> None:
        self.case = case
        self.path = path
        self.source = path.read_text()
        if case.original not in self.source:
            raise ServerError(f"{path}: cannot find {case.original!r} to edit")
        self.count = 0

    def edit(self, label: str) -> bytes:
        """Write the next edit; the bytes that prove it is served."""
        self.count += 1
        marker = f"{label} {self.count}"
        self.path.write_text(self.case.edited(self.source, marker))
        return marker.encode()


async def warm_up(port: int, editor: Editor, deadline_s: float) -> float:
    """First edit, repeated once a second until served: proves the watcher is live without
    guessing when each server finished registering its watches."""
    start = time.perf_counter()
    while time.perf_counter() - start < deadline_s:
        needle = editor.edit("warm-up")
        if await wait_for_body(port, needle, 1.0) is not None:
            return time.perf_counter() - start
    raise ServerError(f"no edit was served within {deadline_s:.0f}s (is the watcher running?)")


async def measure_edits(port: int, editor: Editor, edits: int) -> dict[str, Any]:
    samples: list[float] = []
    missed = 0
    for _ in range(edits):
        needle = editor.edit("edit")
        start = time.perf_counter()
        elapsed = await wait_for_body(port, needle)
        if elapsed is None:
            missed += 1
            continue
        samples.append((time.perf_counter() - start) * 1000)
    ordered = sorted(samples)
    return {
        "samples_ms": [round(s, 1) for s in samples],
        "p50_ms": round(percentile(ordered, 50), 1) if ordered else None,
        "p90_ms": round(percentile(ordered, 90), 1) if ordered else None,
        "max_ms": round(ordered[-1], 1) if ordered else None,
        "missed": missed,
    }


async def load_during_reloads(port: int, editor: Editor, args: argparse.Namespace
                              ) -> dict[str, Any]:
    errors = new_errors()
    ok = 0
    latencies: list[float] = []
    stop = asyncio.Event()

    async def client() -> None:
        nonlocal ok
        conn = Http1Client(LOCALHOST, port, errors=errors)
        while not stop.is_set():
            sent = time.perf_counter()
            answer = await conn.get()
            if answer is None:
                continue
            latencies.append((time.perf_counter() - sent) * 1000)
            if answer[0] == 200:
                ok += 1
            else:
                errors["status"] += 1
        conn.close()

    tasks = [asyncio.ensure_future(client()) for _ in range(args.connections)]
    reload_ms: list[float | None] = []
    started = time.perf_counter()
    try:
        await asyncio.sleep(args.tail)  # load is on before the first edit
        for _ in range(args.reloads):
            elapsed = await wait_for_body(port, editor.edit("under load"))
            reload_ms.append(round(elapsed * 1000, 1) if elapsed is not None else None)
            await asyncio.sleep(args.tail)  # measurement window: the drain happens here
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    duration = time.perf_counter() - started
    latencies.sort()
    failed = sum(errors.values())
    return {
        "reloads": args.reloads,
        "save_to_serve_ms": reload_ms,
        "requests": ok + failed,
        "ok": ok,
        "failed": failed,
        "errors": errors,
        "duration_s": round(duration, 2),
        "requests_per_sec": round((ok + failed) / duration, 1) if duration else 0.0,
        "latency_ms": {f"p{p}": round(percentile(latencies, p), 2) for p in (50, 99)}
        | {"max": round(latencies[-1], 2) if latencies else None},
    }


def run_one(server: str, case: AppCase, args: argparse.Namespace, workdir: Path
            ) -> dict[str, Any]:
    project = Path(tempfile.mkdtemp(prefix=f"{server}-{case.name}-", dir=workdir))
    app_file = project / f"{case.module}.py"
    shutil.copy(EXAMPLES / f"{case.module}.py", app_file)

    def measure(running: RunningServer) -> dict[str, Any]:
        port = running.spec.port
        editor = Editor(case, app_file)
        warm = asyncio.run(warm_up(port, editor, SERVE_DEADLINE_S))
        return {"warm_up_ms": round(warm * 1000, 1),
                "save_to_serve": asyncio.run(measure_edits(port, editor, args.edits)),
                "under_load": asyncio.run(load_during_reloads(port, editor, args))}

    return BENCH.serve(
        args, lambda port: server_spec(server, case, project, port, args.uvicorn_reload_delay),
        measure, log_dir=workdir)


def line(run: dict[str, Any]) -> str:
    s, load = run["save_to_serve"], run["under_load"]
    return (f"save-to-serve p50 {s['p50_ms']} ms, p90 {s['p90_ms']} ms, max {s['max_ms']} ms,"
            f" missed {s['missed']}; under load: {load['failed']} failed of {load['requests']}"
            f" ({counts(load['errors'])})")


def main(argv: list[str] | None = None) -> int:
    parser = BENCH.parser()
    parser.add_argument("--edits", type=int, help="measured edits per run (12; quick: 5)")
    parser.add_argument("--reloads", type=int, help="reloads under load (5; quick: 2)")
    parser.add_argument("--tail", type=float, default=1.0,
                        help="seconds of load kept on after each reload is served (1.0)")
    parser.add_argument("--apps", default=",".join(APPS), help="hello,starlette")
    parser.add_argument("--uvicorn-reload-delay", type=float,
                        help="pass --reload-delay to uvicorn (default: uvicorn's own, 0.25)")
    args = BENCH.parse(parser, argv)
    apps = pick(parser, "--apps", args.apps, list(APPS))
    if min(args.edits, args.reloads) < 1:
        parser.error("--edits and --reloads must be >= 1")
    with tempfile.TemporaryDirectory(prefix="bench-save-to-serve-") as tmp:
        return BENCH.run(
            args, lambda server, app: run_one(server, APPS[app or "hello"], args, Path(tmp)),
            line=line, variants=apps,
            header=f"{', '.join(apps)} | {args.edits} edits, {args.reloads} reloads under "
                   f"{args.connections} keep-alive clients",
            settings={"edits": args.edits, "warm_up_edits": 1, "poll_interval_ms": POLL_S * 1000,
                      "serve_deadline_s": SERVE_DEADLINE_S, "reloads_under_load": args.reloads,
                      "tail_after_reload_s": args.tail,
                      "uvicorn_reload_delay": args.uvicorn_reload_delay,
                      "percentiles": "nearest rank"},
            commands={app: {s: server_spec(s, APPS[app], Path("DIR"), 0,
                                           args.uvicorn_reload_delay).template()
                            for s in args.servers} for app in apps},
        )


if __name__ == "__main__":
    sys.exit(main())
