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
Both run with their defaults for reloading (devserve: 50 ms quiet period; uvicorn: watchfiles
with ``--reload-delay 0.25``); ``--uvicorn-reload-delay`` changes uvicorn's.

Run from the repo root::

    python benchmarks/bench_save_to_serve.py              # ~2 minutes
    python benchmarks/bench_save_to_serve.py --quick      # 5 edits, 2 reloads, ~40 s
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    LOCALHOST,
    REPO_ROOT,
    ServerError,
    ServerSpec,
    _read_response,
    format_table,
    free_port,
    machine_info,
    percentile,
    results_path,
    running_server,
    sigterm_as_interrupt,
    write_json,
)

EXAMPLES = REPO_ROOT / "examples"
POLL_S = 0.005
SERVE_DEADLINE_S = 20.0
SERVERS = ("devserve", "uvicorn")


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

    @staticmethod
    def expected(marker: str) -> bytes:
        return marker.encode()


APPS = {
    "hello": AppCase("hello", "hello", 'HELLO = b"Hello, world!"', b"Hello, world!"),
    "starlette": AppCase("starlette", "starlette_app",
                         'PlainTextResponse("Hello from Starlette")', b"Hello from Starlette"),
}


@dataclass
class Settings:
    edits: int
    reloads: int
    clients: int
    tail_s: float
    start_timeout: float
    uvicorn_reload_delay: float | None


def server_argv(server: str, case: AppCase, project: Path, port: int,
                settings: Settings) -> list[str]:
    common = [f"{case.module}:app", "--app-dir", str(project), "--host", LOCALHOST,
              "--port", str(port), "--no-access-log"]
    if server == "devserve":
        return [sys.executable, "-m", "devserve", "--reload", *common, "--tui", "off"]
    argv = [sys.executable, "-m", "uvicorn", "--reload", *common, "--reload-dir", str(project)]
    if settings.uvicorn_reload_delay is not None:
        argv += ["--reload-delay", str(settings.uvicorn_reload_delay)]
    return argv


def command_template(server: str, case: AppCase, settings: Settings) -> str:
    argv = server_argv(server, case, Path("DIR"), 0, settings)
    argv[0] = "python"
    return shlex.join(argv).replace("--port 0", "--port PORT")


# --------------------------------------------------------------------------- HTTP helpers


async def get_once(port: int, timeout: float = 1.0) -> tuple[int, bytes] | None:
    """One GET / on a fresh connection; None on any connection-level failure."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(LOCALHOST, port),
                                                timeout)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {LOCALHOST}:{port}\r\n"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


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


# --------------------------------------------------------------------------- the two phases


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
        self.count += 1
        marker = f"{label} {self.count}"
        self.path.write_text(self.case.edited(self.source, marker))
        return self.case.expected(marker)


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


async def load_during_reloads(port: int, editor: Editor, settings: Settings
                              ) -> dict[str, Any]:
    request = f"GET / HTTP/1.1\r\nHost: {LOCALHOST}:{port}\r\n\r\n".encode()
    errors = {"connect": 0, "write": 0, "read": 0, "timeout": 0, "status": 0}
    ok = 0
    latencies: list[float] = []
    stop = asyncio.Event()

    async def client() -> None:
        nonlocal ok
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while not stop.is_set():
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(LOCALHOST, port)
                except OSError:
                    errors["connect"] += 1
                    await asyncio.sleep(0.01)
                    continue
            assert reader is not None
            sent = time.perf_counter()
            try:
                writer.write(request)
                await writer.drain()
            except OSError:
                errors["write"] += 1
                writer.close()
                writer = None
                continue
            try:
                status, close = await asyncio.wait_for(_read_response(reader), 5.0)
            except TimeoutError:
                errors["timeout"] += 1
                close = True
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ValueError, IndexError):
                errors["read"] += 1
                close = True
            else:
                latencies.append((time.perf_counter() - sent) * 1000)
                if status == 200:
                    ok += 1
                else:
                    errors["status"] += 1
            if close:
                writer.close()
                writer = None
        if writer is not None:
            writer.close()

    tasks = [asyncio.ensure_future(client()) for _ in range(settings.clients)]
    reload_ms: list[float | None] = []
    started = time.perf_counter()
    try:
        await asyncio.sleep(settings.tail_s)  # load is on before the first edit
        for _ in range(settings.reloads):
            needle = editor.edit("under load")
            elapsed = await wait_for_body(port, needle)
            reload_ms.append(round(elapsed * 1000, 1) if elapsed is not None else None)
            await asyncio.sleep(settings.tail_s)  # measurement window: the drain happens here
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    duration = time.perf_counter() - started
    latencies.sort()
    failed = sum(errors.values())
    return {
        "clients": settings.clients,
        "reloads": settings.reloads,
        "save_to_serve_under_load_ms": reload_ms,
        "requests": ok + failed,
        "ok": ok,
        "failed": failed,
        "errors": errors,
        "duration_s": round(duration, 2),
        "requests_per_sec": round((ok + failed) / duration, 1) if duration else 0.0,
        "latency_ms": {f"p{p}": round(percentile(latencies, p), 2) for p in (50, 99)}
        | {"max": round(latencies[-1], 2) if latencies else None},
    }


def run_one(server: str, case: AppCase, settings: Settings, workdir: Path) -> dict[str, Any]:
    project = workdir / f"{server}-{case.name}"
    project.mkdir()
    app_file = project / f"{case.module}.py"
    shutil.copy(EXAMPLES / f"{case.module}.py", app_file)
    port = free_port()
    spec = ServerSpec(
        name=f"{server}-{case.name}",
        argv=server_argv(server, case, project, port, settings),
        url=f"http://{LOCALHOST}:{port}/",
        cwd=project,
        expect_body=case.first_body,
    )
    with running_server(spec, start_timeout=settings.start_timeout, log_dir=workdir) as running:
        editor = Editor(case, app_file)
        warm = asyncio.run(warm_up(port, editor, SERVE_DEADLINE_S))
        edits = asyncio.run(measure_edits(port, editor, settings.edits))
        load = asyncio.run(load_during_reloads(port, editor, settings))
        alive = running.process.poll() is None
        tail = running.log_tail(15)
    return {
        "startup_s": round(running.startup_s, 3),
        "warm_up_ms": round(warm * 1000, 1),
        "save_to_serve": edits,
        "under_load": load,
        "server_alive_at_end": alive,
        "log_tail": tail,
    }


# --------------------------------------------------------------------------- reporting


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_report(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    rows = []
    for app, per_server in results.items():
        for server, r in per_server.items():
            s, load = r["save_to_serve"], r["under_load"]
            under = [v for v in load["save_to_serve_under_load_ms"] if v is not None]
            rows.append([
                f"{server} / {app}", _ms(s["p50_ms"]), _ms(s["p90_ms"]), _ms(s["max_ms"]),
                str(s["missed"]), _ms(max(under) if under else None),
                str(load["requests"]), str(load["failed"]),
                ",".join(f"{k}={v}" for k, v in load["errors"].items() if v) or "-",
            ])
    print()
    print(format_table(["server / app", "p50 ms", "p90 ms", "max ms", "missed",
                        "max under load", "requests", "failed", "failures"], rows))
    for app, per_server in results.items():
        if all(name in per_server for name in SERVERS):
            d, u = per_server["devserve"]["save_to_serve"], per_server["uvicorn"]["save_to_serve"]
            if d["p50_ms"] and u["p50_ms"]:
                print(f"{app}: devserve/uvicorn save-to-serve p50 {d['p50_ms'] / u['p50_ms']:.2f}x"
                      " (lower is better)")


def default_output() -> Path:
    return results_path("save-to-serve")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Edit-to-new-response latency and failed requests during reloads, "
                    "devserve --reload vs uvicorn --reload, on hello and Starlette apps.")
    parser.add_argument("--edits", type=int, help="measured edits per run (default 12)")
    parser.add_argument("--reloads", type=int, help="reloads under load (default 5)")
    parser.add_argument("--clients", type=int, default=20, help="keep-alive clients (20)")
    parser.add_argument("--tail", type=float, default=1.0,
                        help="seconds of load kept on after each reload is served (1.0)")
    parser.add_argument("--apps", default="hello,starlette", help="hello,starlette")
    parser.add_argument("--servers", default=",".join(SERVERS), help="devserve,uvicorn")
    parser.add_argument("--uvicorn-reload-delay", type=float,
                        help="pass --reload-delay to uvicorn (default: uvicorn's own, 0.25)")
    parser.add_argument("--start-timeout", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="5 edits, 2 reloads")
    parser.add_argument("--output", type=Path, help="JSON path (default benchmarks/results/...)")
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)
    args.edits = args.edits or (5 if args.quick else 12)
    args.reloads = args.reloads or (2 if args.quick else 5)
    return args


def main(argv: list[str] | None = None) -> int:
    sigterm_as_interrupt()
    args = parse_args(argv)
    settings = Settings(edits=args.edits, reloads=args.reloads, clients=args.clients,
                        tail_s=args.tail, start_timeout=args.start_timeout,
                        uvicorn_reload_delay=args.uvicorn_reload_delay)
    apps = [APPS[a] for a in args.apps.split(",") if a]
    servers = [s for s in args.servers.split(",") if s]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        print(f"unknown servers: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    print(f"save-to-serve: {' vs '.join(servers)} on {', '.join(a.name for a in apps)} | "
          f"{settings.edits} edits, {settings.reloads} reloads under {settings.clients} "
          f"keep-alive clients")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    report: Callable[[str], None] = print
    try:
        with tempfile.TemporaryDirectory(prefix="bench-save-to-serve-") as tmp:
            for case in apps:
                for server in servers:
                    report(f"  {server} / {case.name} ...")
                    r = run_one(server, case, settings, Path(tmp))
                    results.setdefault(case.name, {})[server] = r
                    s, load = r["save_to_serve"], r["under_load"]
                    report(f"    save-to-serve p50 {_ms(s['p50_ms'])} ms, p90 "
                           f"{_ms(s['p90_ms'])} ms, max {_ms(s['max_ms'])} ms, missed "
                           f"{s['missed']}; under load: {load['failed']} failed of "
                           f"{load['requests']} ({load['errors']})")
    except ServerError as exc:
        print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped, nothing written", file=sys.stderr)
        return 130

    print_report(results)
    record = {
        "benchmark": "save-to-serve",
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": {
            "edits": settings.edits,
            "warm_up_edits": 1,
            "poll_interval_ms": POLL_S * 1000,
            "serve_deadline_s": SERVE_DEADLINE_S,
            "reloads_under_load": settings.reloads,
            "keep_alive_clients": settings.clients,
            "tail_after_reload_s": settings.tail_s,
            "uvicorn_reload_delay": settings.uvicorn_reload_delay,
            "percentiles": "nearest rank",
        },
        "commands": {case.name: {s: command_template(s, case, settings) for s in servers}
                     for case in apps},
        "machine": machine_info(packages=["devserve", "uvicorn", "starlette", "watchfiles",
                                          "h11", "uvloop", "httptools"]),
        "results": results,
    }
    if not args.no_save:
        path = args.output or default_output()
        write_json(path, record)
        print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
