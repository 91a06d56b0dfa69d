"""Deploys and stops under load: requests lost, devserve (thread, process) vs uvicorn.

Two scenarios, the ones an operator runs every day (``--scenarios``):

- ``sigterm``: one server with ``--workers 2`` serves ``tests/apps/sup_app.py``; 10 keep-alive
  clients send ``GET /`` back to back and 3 slow requests (``/slow?s=1``) are in flight when
  it gets SIGTERM. Every client goes on until its connect is refused (the server is gone).
- ``rolling-http`` / ``rolling-tcp``: three instances behind a real HAProxy (``tests/haproxy.py``:
  round robin, health checks every 100 ms, retry on connection failure or empty response, never
  on a 503) under 20 keep-alive clients; each instance in turn gets SIGTERM, exits, and is
  started again on its port, and the next one waits until it is back in rotation. HTTP checks:
  devserve with ``--health-path /healthz --shutdown-delay 0.5``, uvicorn (no health endpoint,
  no delay) on ``/``; TCP checks: a plain connect. devserve runs ``--workers 2`` per instance,
  uvicorn plain instances (one process each, the usual way to run it behind a balancer).

The clients are ``tests/load.py``'s ``LoadClients`` (the shutdown and rolling-restart tests use
them too, so a benchmark figure and a test failure mean the same thing): a request *sent* and not
answered 200 is **lost** — another status, a reset, the connection ending before the answer (EOF)
or a timeout; a refused connect sent nothing and is not lost. Reported per server and scenario:
requests answered, lost (total and worst run) by kind, in-flight requests answered, exit codes
and how long the stop took.

Run from the repo root::

    python benchmarks/bench_deploy.py                    # 3 rounds x 3 servers x 3 scenarios
    python benchmarks/bench_deploy.py --quick            # 1 round
    python benchmarks/bench_deploy.py --scenarios sigterm --rounds 5
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    LOCALHOST,
    REPO_ROOT,
    Benchmark,
    Metric,
    ServerError,
    ServerSpec,
    free_port,
    pick,
)
from _servers import RunningServer, running_server

sys.path.insert(0, str(REPO_ROOT))
from tests import haproxy  # the balancer of the rolling-restart test
from tests.load import LoadClients, Tally  # the tests' clients: one classification

APPS = REPO_ROOT / "tests" / "apps"
SCENARIOS = ("sigterm", "rolling-http", "rolling-tcp")
REQUEST_TIMEOUT = 15.0
GRACE = "10"  # --timeout-graceful-shutdown for every server
BACK_IN_ROTATION = 20  # requests an instance must have served through the balancer


def _lost(run: dict[str, Any]) -> int:
    return int(run["lost"])


BENCH = Benchmark(
    kind="deploy",
    title="deploys under load",
    description="Requests lost on SIGTERM under load and on rolling restarts behind HAProxy: "
                "devserve (thread, process) vs uvicorn.",
    servers=("devserve-thread", "devserve-process", "uvicorn"),
    full={"rounds": 3, "clients": 10, "balanced_clients": 20, "slow": 3},
    quick={"rounds": 1},
    metrics=(
        Metric("requests_ok", lambda r: r["ok"], fold=sum, label="ok", fmt="{:,}"),
        Metric("lost_total", _lost, fold=sum, label="lost", fmt="{}", better="lower"),
        Metric("lost_max_per_run", _lost, fold=max, label="lost max/run", fmt="{}"),
        Metric("non_200", lambda r: r["non_200"], fold=sum, label="non-200", fmt="{}"),
        Metric("resets", lambda r: r["resets"], fold=sum, label="reset", fmt="{}"),
        Metric("eofs", lambda r: r["eofs"], fold=sum, label="EOF", fmt="{}"),
        Metric("timeouts", lambda r: r["timeouts"], fold=sum, label="timeout", fmt="{}"),
        Metric("refused", lambda r: r["refused"], fold=sum),
        Metric("in_flight_ok", lambda r: r.get("in_flight_ok", []),
               fold=lambda v: sum(v) if v else None, label="in-flight ok", fmt="{}"),
        Metric("exit_codes", lambda r: r["exit_codes"], fold=lambda v: sorted(set(v)),
               label="exit", fmt="{}"),
        Metric("stop_s_median", lambda r: r["stop_s"], label="stop s", fmt="{:.2f}"),
    ),
    packages=("devserve", "uvicorn", "h11", "uvloop"),
    tools={"haproxy": ("haproxy", "-v")},
    variant_key="scenario",
    loop=True,
    start_timeout=30.0,
)


def server_spec(name: str, port: int, scenario: str, loop: str) -> ServerSpec:
    """sup_app on *port*; the rolling scenarios log access lines (how an instance is seen back
    in rotation)."""
    rolling = scenario.startswith("rolling")
    argv = ["sup_app:app", "--app-dir", str(APPS), "--host", LOCALHOST, "--port", str(port),
            "--loop", loop, "--timeout-graceful-shutdown", GRACE, "--log-level", "info"]
    if not rolling:
        argv.append("--no-access-log")
    if name == "uvicorn":
        argv = [sys.executable, "-m", "uvicorn", *argv, *([] if rolling else ["--workers", "2"])]
    else:
        argv = [sys.executable, "-m", "devserve", *argv, "--workers", "2",
                "--worker-mode", name.split("-", 1)[1]]
        if scenario == "rolling-http":
            argv += ["--health-path", "/healthz", "--shutdown-delay", "0.5"]
    return ServerSpec(name, argv, f"http://{LOCALHOST}:{port}/", expect_body=b"v1")


def _until(done: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll *done* (every 10 ms) for at most *timeout* seconds; a load run that stalls fails."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:g}s")
        time.sleep(0.01)


def _started(server: RunningServer) -> bool:
    """Every worker started, not just the first one answering the readiness probe: devserve
    logs its serving generation, uvicorn one startup line per worker process."""
    log = server.log_path.read_text(errors="replace")
    if server.spec.name == "uvicorn":
        workers = 2 if "--workers" in server.spec.argv else 1
        return log.count("Application startup complete") >= workers
    return "Serving generation 1" in log


def _figures(tally: Tally) -> dict[str, Any]:
    return {"ok": tally.ok, "lost": tally.lost, "non_200": sum(tally.statuses.values()),
            "statuses": {str(k): v for k, v in tally.statuses.items()}, "resets": tally.resets,
            "eofs": tally.eofs, "timeouts": tally.timeouts, "refused": tally.refused,
            "closes": tally.closes, "first_errors": tally.errors[:5]}


def _slow_requests(port: int, count: int, directory: Path
                   ) -> tuple[list[threading.Thread], list[object], list[Path]]:
    """*count* ``GET /slow?s=1`` in threads; each writes its marker file once in the app."""
    results: list[object] = [None] * count
    markers = [directory / f"slow-{i}" for i in range(count)]

    def one(index: int) -> None:
        conn = http.client.HTTPConnection(LOCALHOST, port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request("GET", f"/slow?s=1&marker={markers[index]}")
            response = conn.getresponse()
            results[index] = (response.status, response.read())
        except (OSError, http.client.HTTPException) as exc:
            results[index] = repr(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads, results, markers


def sigterm_run(server: RunningServer, clients: int, slow: int) -> dict[str, Any]:
    """Load, slow requests in the app, SIGTERM; every client runs until it is refused."""
    port, process = server.spec.port, server.process
    _until(lambda: _started(server), 30, "every worker started")
    load = LoadClients(LOCALHOST, port, clients, stop_when_refused=True,
                       timeout=REQUEST_TIMEOUT).start()
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        try:
            _until(lambda: load.sent() >= 200, 20, "clients under way")
            threads, results, markers = _slow_requests(port, slow, Path(tmp))
            _until(lambda: all(m.exists() for m in markers), 15, "slow requests in the app")
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            tally = load.join(40)
        finally:
            load.stop(5)
        for thread in threads:
            thread.join(REQUEST_TIMEOUT)
        code = process.wait(30)
    stop_s = time.monotonic() - signalled
    return {**_figures(tally), "in_flight_ok": sum(r == (200, b"slow v1") for r in results),
            "in_flight": [r[0] if isinstance(r, tuple) else r for r in results],
            "exit_codes": [code], "stop_s": round(stop_s, 3)}


def _served(server: RunningServer) -> int:
    try:
        return server.log_path.read_text(errors="replace").count('"GET / HTTP/1.1" 200')
    except OSError:
        return 0


def rolling_run(name: str, scenario: str, args: Any) -> dict[str, Any]:
    """Three instances behind HAProxy under load, each SIGTERMed and started again in turn."""
    def spec_at(port: int) -> ServerSpec:
        return server_spec(name, port, scenario, args.loop)

    check = None if scenario == "rolling-tcp" else ("/" if name == "uvicorn" else "/healthz")
    ports = [free_port() for _ in range(3)]
    front = free_port()
    codes: list[int | None] = []
    stops: list[float] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-deploy-")))
        servers = [stack.enter_context(running_server(spec_at(p), start_timeout=args.start_timeout,
                                                      log_dir=tmp)) for p in ports]
        _until(lambda: all(_started(s) for s in servers), 30, "every instance started")
        (tmp / "haproxy.cfg").write_text(haproxy.config(front, ports, check))
        proxy = haproxy.HAProxy(tmp / "haproxy.cfg")
        stack.callback(proxy.stop)
        _until(lambda: haproxy.connectable(front), 10, "haproxy listening")
        load = LoadClients(LOCALHOST, front, args.balanced_clients,
                           timeout=REQUEST_TIMEOUT).start()
        stack.callback(load.stop, 5)
        _until(lambda: all(_served(s) > BACK_IN_ROTATION for s in servers), 30,
               "every instance serving through haproxy")
        for index, port in enumerate(ports):
            old = servers[index]
            signalled = time.monotonic()
            old.process.send_signal(signal.SIGTERM)
            codes.append(old.process.wait(30))
            stops.append(time.monotonic() - signalled)
            if old.process.returncode is None:
                raise ServerError(f"{name} did not stop within 30 s")
            servers[index] = stack.enter_context(running_server(
                spec_at(port), start_timeout=args.start_timeout, log_dir=tmp))
            _until(lambda: _started(servers[index]), 30, "the new instance started")  # noqa: B023
            _until(lambda: _served(servers[index]) > BACK_IN_ROTATION, 30,  # noqa: B023
                   "the restarted instance back in rotation")
        tally = load.stop(30)
    return {**_figures(tally), "exit_codes": codes,
            "stop_s": round(sorted(stops)[len(stops) // 2], 3), "restarts": len(ports),
            "check": check or "tcp", "command": spec_at(0).command}


def line(run: dict[str, Any]) -> str:
    kinds = ", ".join(f"{k} {run[k]}" for k in ("non_200", "resets", "eofs", "timeouts")
                      if run[k])
    extra = f"  in-flight ok {run['in_flight_ok']}" if "in_flight_ok" in run else ""
    return (f"{run['ok']:>7,} ok  {run['lost']:>4} lost{f' ({kinds})' if kinds else ''}"
            f"{extra}  exit {run['exit_codes']}  stop {run['stop_s']:.2f}s")


def main(argv: list[str] | None = None) -> int:
    parser = BENCH.parser()
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, from {','.join(SCENARIOS)} (all)")
    parser.add_argument("--clients", type=int, help="keep-alive clients, sigterm scenario (10)")
    parser.add_argument("--balanced-clients", type=int,
                        help="keep-alive clients through HAProxy, rolling scenarios (20)")
    parser.add_argument("--slow", type=int, help="slow requests in flight at SIGTERM (3)")
    args = BENCH.parse(parser, argv)
    scenarios = pick(parser, "--scenarios", args.scenarios, SCENARIOS)
    notes: list[str] = []
    if not haproxy.available() and any(s.startswith("rolling") for s in scenarios):
        scenarios = [s for s in scenarios if not s.startswith("rolling")]
        notes.append("haproxy is not installed: the rolling-restart scenarios are left out")
    if not scenarios:
        parser.error("nothing to run")

    def one_run(name: str, scenario: str | None) -> dict[str, Any]:
        assert scenario is not None
        if scenario == "sigterm":
            with running_server(server_spec(name, free_port(), scenario, args.loop),
                                start_timeout=args.start_timeout) as server:
                result = sigterm_run(server, args.clients, args.slow)
            return {"command": server.spec.command, "startup_s": round(server.startup_s, 3),
                    **result}
        return rolling_run(name, scenario, args)

    return BENCH.run(
        args, one_run, line=line, variants=scenarios,
        header=f"loop {args.loop} | sigterm: {args.clients} clients + {args.slow} slow, "
               f"--workers 2 | rolling: 3 instances behind HAProxy, {args.balanced_clients} "
               f"clients",
        settings={"scenarios": scenarios, "clients": args.clients,
                  "balanced_clients": args.balanced_clients, "slow_requests": args.slow,
                  "timeout_graceful_shutdown_s": float(GRACE),
                  "request_timeout_s": REQUEST_TIMEOUT,
                  "client": "tests/load.py LoadClients: blocking h11 keep-alive clients; lost ="
                            " sent and not answered 200 (status, reset, EOF, timeout)",
                  "haproxy": "tests/haproxy.py: roundrobin, check inter 100ms fall 1 rise 1, "
                             "retries 3, redispatch, retry-on conn-failure empty-response"},
        commands={f"{scenario} {name}": server_spec(name, 0, scenario, args.loop).template()
                  for scenario in scenarios for name in args.servers},
        notes=notes,
    )


if __name__ == "__main__":
    sys.exit(main())
