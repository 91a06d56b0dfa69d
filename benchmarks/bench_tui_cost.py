"""CPU cost of the live dashboard: the same fixed-rate load on devserve with ``--tui on`` and
with ``--tui off``, both in a real terminal (a tmux pane), and the difference in server CPU.

Each run starts ``devserve hello:app`` (``examples/hello.py``; thread mode, 1 worker) inside a
fresh tmux pane on a private tmux server, waits until it answers, checks the terminal shows what
the configuration promises (dashboard or plain lines), drives an open-loop load of ``--rate``
requests per second for ``--duration`` seconds from a rate-limited asyncio client (raw sockets,
keep-alive, one request in flight per connection, sends scheduled on a fixed clock), and reads
the server process's CPU time (utime + stime of every thread, ``/proc/<pid>/stat``) before and
after. CPU% is of one core. Configurations are interleaved per round, in rotating order.

Configurations:

- ``tui-on``        ``--tui on`` (the access log goes to the dashboard's request panel)
- ``tui-off``       ``--tui off --no-access-log`` (baseline: a silent server)
- ``tui-off-log``   ``--tui off`` with the access log printing one line per request to the
                    terminal (what a developer gets without the dashboard)

The dashboard cost is ``tui-on - tui-off`` (median across rounds); the goal is < 5% of a core.

Run from the repo root (Linux: needs /proc and tmux)::

    python benchmarks/bench_tui_cost.py                  # 3 configs x 2 rounds, ~2.5 min
    python benchmarks/bench_tui_cost.py --quick          # 1 round, 5 s each
    python benchmarks/bench_tui_cost.py --rate 1000 --duration 30 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    EXAMPLES,
    LOCALHOST,
    REPO_ROOT,
    Benchmark,
    Metric,
    ServerError,
    free_port,
    wait_ready,
)
from _load import Http1Client, new_errors, percentile

CONFIGS: dict[str, list[str]] = {
    "tui-on": ["--tui", "on", "--no-access-log"],
    "tui-off": ["--tui", "off", "--no-access-log"],
    "tui-off-log": ["--tui", "off"],
}
BASELINE = "tui-off"
GOAL_PERCENT = 5.0
COLS, ROWS = 120, 45
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _present(value: float | None) -> list[float]:
    return [] if value is None else [value]


BENCH = Benchmark(
    kind="tui-cost",
    title="dashboard CPU cost, devserve hello:app in tmux",
    description="CPU cost of devserve's live dashboard at a fixed request rate (tui on vs off, "
                "in tmux).",
    servers=tuple(CONFIGS),
    full={"rounds": 2, "duration": 15.0, "warmup": 2.0, "connections": 8, "rate": 2000.0,
          "idle": 5.0},
    quick={"rounds": 1, "duration": 5.0, "warmup": 1.0, "idle": 2.0},
    metrics=(
        Metric("server_cpu_percent", lambda r: r["server_cpu_percent"], label="server CPU %",
               fmt="{:.1f}"),
        Metric("server_cpu_percent_runs", lambda r: r["server_cpu_percent"], fold=list),
        Metric("idle_server_cpu_percent", lambda r: _present(r["idle_server_cpu_percent"]),
               label="idle CPU %", fmt="{:.1f}"),
        Metric("tmux_server_cpu_percent", lambda r: r["tmux_server_cpu_percent"],
               label="tmux CPU %", fmt="{:.1f}"),
        Metric("achieved_rate", lambda r: r["load"]["achieved_rate"], label="req/s",
               fmt="{:.0f}"),
        Metric("p99_ms", lambda r: r["load"]["latency_ms"]["p99"], label="p99 ms", fmt="{:.1f}"),
        Metric("errors", lambda r: sum(r["load"]["errors"].values()), fold=sum, label="errors",
               fmt="{}"),
    ),
    packages=("devserve", "rich", "h11", "uvloop"),
    tools={"tmux": ("tmux", "-V")},
    aliases={"servers": ("--configs",)},
)


# --------------------------------------------------------------------------- CPU accounting


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* (all its threads) in seconds, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class CpuWindow:
    """CPU used by one process between two readings, as % of one core."""

    pid: int
    cpu_start: float = 0.0
    wall_start: float = 0.0
    cpu_s: float = 0.0
    wall_s: float = 0.0

    def start(self) -> None:
        self.cpu_start, self.wall_start = cpu_seconds(self.pid), time.monotonic()

    def stop(self) -> None:
        self.cpu_s = cpu_seconds(self.pid) - self.cpu_start
        self.wall_s = time.monotonic() - self.wall_start

    @property
    def percent(self) -> float:
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else float("nan")


# --------------------------------------------------------------------------- fixed-rate load


@dataclass
class RateResult:
    target_rate: float
    duration_s: float
    connections: int
    sent: int = 0  # requests attempted (a failed connect counts as one)
    completed: int = 0
    achieved_rate: float = 0.0
    errors: dict[str, int] = field(default_factory=new_errors)
    # From the scheduled send time (includes queueing when the server falls behind) ...
    latency_ms: dict[str, float] = field(default_factory=dict)
    # ... and from the moment the request was actually written.
    service_ms: dict[str, float] = field(default_factory=dict)
    max_lag_ms: float = 0.0
    client_cpu_percent: float = 0.0


async def _fixed_rate(host: str, port: int, rate: float, duration_s: float,
                      connections: int, path: str) -> RateResult:
    """Open-loop schedule: request n is due at start + n / rate, spread over *connections*
    keep-alive connections (connection k sends n = k, k + C, k + 2C, ...). A connection whose
    previous answer came late sends the overdue request at once, so a slow server shows up as
    latency measured from the schedule, not as a silently lower rate."""
    loop = asyncio.get_running_loop()
    result = RateResult(target_rate=rate, duration_s=duration_s, connections=connections)
    total = int(rate * duration_s)
    latencies: list[float] = []
    service: list[float] = []
    start = loop.time() + 0.05

    async def client(k: int) -> None:
        conn = Http1Client(host, port, path, errors=result.errors, retry_pause=0.0)
        for n in range(k, total, connections):
            due = start + n / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            result.max_lag_ms = max(result.max_lag_ms, (loop.time() - due) * 1e3)
            sent = loop.time()
            result.sent += 1
            answer = await conn.get()
            if answer is None:
                continue
            done = loop.time()
            result.completed += 1
            latencies.append((done - due) * 1e3)
            service.append((done - sent) * 1e3)
            if answer[0] != 200:
                result.errors["status"] += 1
        conn.close()

    cpu0 = time.process_time()
    await asyncio.gather(*(client(k) for k in range(connections)))
    elapsed = loop.time() - start
    result.client_cpu_percent = 100.0 * (time.process_time() - cpu0) / elapsed
    result.achieved_rate = result.completed / elapsed if elapsed > 0 else 0.0
    latencies.sort()
    service.sort()
    result.latency_ms = {f"p{p}": round(percentile(latencies, p), 3) for p in (50, 90, 99)}
    result.service_ms = {f"p{p}": round(percentile(service, p), 3) for p in (50, 90, 99)}
    result.max_lag_ms = round(result.max_lag_ms, 3)
    return result


def fixed_rate_load(port: int, *, rate: float, duration_s: float, connections: int,
                    path: str = "/") -> RateResult:
    return asyncio.run(_fixed_rate(LOCALHOST, port, rate, duration_s, connections, path))


# --------------------------------------------------------------------------- tmux-hosted server


class TmuxServer:
    """devserve in a 120x45 tmux pane on a private tmux server (its own socket in a temp
    dir), so nothing else on the machine is touched; the pane process *is* devserve
    (``exec``)."""

    def __init__(self, config: str, port: int, workdir: Path) -> None:
        token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.socket = str(workdir / f"tmux-{token}.sock")
        self.session = f"tui-cost-{config}-{token}"
        self.config = config
        self.port = port
        self.argv = [sys.executable, "-m", "devserve", "hello:app", "--app-dir", str(EXAMPLES),
                     "--host", LOCALHOST, "--port", str(port), "--worker-mode", "thread",
                     "--workers", "1", *CONFIGS[config]]
        self.script = workdir / f"{self.session}.sh"
        self.pid = 0
        self.tmux_pid = 0
        self.started = False

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}/"

    def tmux(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if k != "TMUX"}
        proc = subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True,
                              text=True, timeout=10, check=False, env=env)
        if proc.returncode != 0:
            raise ServerError(f"tmux {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def start(self, timeout: float = 30.0) -> None:
        self.script.write_text("\n".join([
            f"cd {shlex.quote(str(REPO_ROOT))}",
            f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}",
            "unset DEVSERVE_TUI DEVSERVE_LOG_FORMAT DEVSERVE_ACCESS_LOG",
            "exec " + shlex.join(self.argv),
            "",
        ]))
        self.tmux("new-session", "-d", "-s", self.session, "-x", str(COLS), "-y", str(ROWS),
                  f"/bin/sh {shlex.quote(str(self.script))}")
        self.started = True
        self.pid = int(self.tmux("display-message", "-p", "-t", self.session,
                                 "#{pane_pid}").strip())
        self.tmux_pid = int(self.tmux("display-message", "-p", "#{pid}").strip())
        try:
            wait_ready(self.url, timeout=timeout)
        except ServerError as exc:
            raise ServerError(f"{self.config}: {exc}\n{self.screen()}") from None
        if not alive(self.pid):
            raise ServerError(f"{self.config}: pane process {self.pid} is gone")
        cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        if b"devserve" not in cmdline:
            raise ServerError(f"{self.config}: pid {self.pid} is not devserve: {cmdline!r}")

    def screen(self) -> str:
        try:
            return self.tmux("capture-pane", "-p", "-t", self.session)
        except ServerError as exc:
            return str(exc)

    def dashboard_total(self) -> int | None:
        """The request counter shown by the dashboard (None when no dashboard is on screen)."""
        totals = re.findall(r"req/s · (\d+) total", self.screen())
        return int(totals[-1]) if totals else None

    def stop(self, grace: float = 15.0) -> None:
        if self.pid and alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(self.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
        if self.started:
            with contextlib.suppress(ServerError, subprocess.SubprocessError):
                self.tmux("kill-session", "-t", self.session)
            self.started = False
        self.script.unlink(missing_ok=True)


# --------------------------------------------------------------------------- one run


def check_screen(server: TmuxServer) -> None:
    """The pane shows what the configuration promises, so we measure what we think we do."""
    deadline = time.monotonic() + 10
    while True:
        screen = server.screen()
        has_dashboard = "workers" in screen and "req/s" in screen
        if server.config == "tui-on" and has_dashboard:
            return
        if server.config != "tui-on" and "Serving generation 1" in screen:
            if has_dashboard:
                raise ServerError(f"{server.config}: dashboard on screen:\n{screen}")
            return
        if time.monotonic() > deadline:
            raise ServerError(f"{server.config}: unexpected screen:\n{screen}")
        time.sleep(0.05)


def wait_dashboard_total(server: TmuxServer, at_least: int, timeout: float = 5.0) -> int | None:
    """Poll until the dashboard counted *at_least* requests (it renders at most 10 fps)."""
    deadline = time.monotonic() + timeout
    while True:
        total = server.dashboard_total()
        if total is not None and total >= at_least:
            return total
        if time.monotonic() > deadline:
            return total
        time.sleep(0.05)


def one_run(config: str, settings: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    server = TmuxServer(config, free_port(), workdir)
    try:
        server.start(settings.start_timeout)
        check_screen(server)
        idle = CpuWindow(server.pid)
        idle_tmux = CpuWindow(server.tmux_pid)
        if settings.idle > 0:
            idle.start()
            idle_tmux.start()
            time.sleep(settings.idle)  # the measurement window itself, not a settling delay
            idle.stop()
            idle_tmux.stop()
        if settings.warmup > 0:
            fixed_rate_load(server.port, rate=settings.rate, duration_s=settings.warmup,
                            connections=settings.connections)
        before = server.dashboard_total() if config == "tui-on" else None
        window = CpuWindow(server.pid)
        tmux_window = CpuWindow(server.tmux_pid)
        window.start()
        tmux_window.start()
        load = fixed_rate_load(server.port, rate=settings.rate, duration_s=settings.duration,
                               connections=settings.connections)
        window.stop()
        tmux_window.stop()
        shown = expected = None
        if config == "tui-on":
            # Every request of warm-up + measurement must reach the dashboard's counter.
            expected = (before or 0) + load.completed
            shown = wait_dashboard_total(server, expected)
            if shown is None or shown < expected:
                print(f"  warning: the dashboard shows {shown} requests, expected {expected}",
                      flush=True)
        run = {
            "command": shlex.join(server.argv).replace(str(server.port), "PORT"),
            "server_cpu_percent": round(window.percent, 2),
            "server_cpu_s": round(window.cpu_s, 3),
            "wall_s": round(window.wall_s, 3),
            "tmux_server_cpu_percent": round(tmux_window.percent, 2),
            "idle_server_cpu_percent": round(idle.percent, 2) if settings.idle > 0 else None,
            "idle_tmux_cpu_percent": round(idle_tmux.percent, 2) if settings.idle > 0 else None,
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
            "dashboard_total_shown": shown,
            "dashboard_total_expected": expected,
            "load": asdict(load),
        }
        return run
    finally:
        server.stop()


def line(run: dict[str, Any]) -> str:
    load = run["load"]
    lag = f"  max lag {load['max_lag_ms']:.0f} ms" if load["max_lag_ms"] > 50 else ""
    idle = run["idle_server_cpu_percent"]
    return (f"server CPU {run['server_cpu_percent']:5.1f}%  "
            f"(idle {'-' if idle is None else f'{idle:.1f}%'})  "
            f"tmux {run['tmux_server_cpu_percent']:4.1f}%  {load['achieved_rate']:7.1f} req/s  "
            f"p99 {load['latency_ms'].get('p99', 0):.1f} ms "
            f"(service {load['service_ms'].get('p99', 0):.1f} ms)  "
            f"errors {sum(load['errors'].values())}{lag}")


# --------------------------------------------------------------------------- driver


def conclude(result: dict[str, Any], rate: float) -> list[str]:
    """The dashboard's cost: tui-on minus the silent baseline (and minus the access log), in
    % of one core; added to the result, and the report's last lines."""
    cpu = {c: v["server_cpu_percent"] for c, v in result["servers"].items()}
    idle = {c: v["idle_server_cpu_percent"] for c, v in result["servers"].items()}

    def minus(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(a - b, 2)

    cost = minus(cpu["tui-on"], cpu[BASELINE])
    result.update({
        "dashboard_cost_percent_of_core": cost,
        "dashboard_idle_cost_percent_of_core": minus(idle["tui-on"], idle[BASELINE]),
        "tui_on_minus_access_log_percent_of_core": minus(cpu["tui-on"], cpu.get("tui-off-log")),
        "goal_percent_of_core": GOAL_PERCENT,
        "goal_met": cost is not None and cost < GOAL_PERCENT,
        "configs_below_95pct_of_target_rate": [
            c for c, v in result["servers"].items() if v["achieved_rate"] < 0.95 * rate],
    })
    lines = [f"dashboard cost (tui-on - tui-off): {cost:+.1f}% of one core "
             f"(goal < {GOAL_PERCENT:.0f}%: {'met' if result['goal_met'] else 'NOT met'})"]
    for key, text in (("dashboard_idle_cost_percent_of_core", "dashboard cost when idle:"),
                      ("tui_on_minus_access_log_percent_of_core", "tui-on vs access log:")):
        if result[key] is not None:
            lines.append(f"{text:<35}{result[key]:+.1f}% of one core")
    if result["configs_below_95pct_of_target_rate"]:
        lines.append("warning: below 95% of the target rate in "
                     + ", ".join(result["configs_below_95pct_of_target_rate"]))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = BENCH.parser()
    parser.add_argument("--rate", type=float, help="requests/s (2000)")
    parser.add_argument("--idle", type=float,
                        help="idle CPU window seconds (5; quick: 2; 0: skip)")
    args = BENCH.parse(parser, argv)
    if "tui-on" not in args.servers or BASELINE not in args.servers:
        parser.error(f"--servers (--configs) needs tui-on and {BASELINE}")
    if not Path("/proc/self/stat").exists():
        print("needs Linux /proc for per-process CPU time", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="devserve-tui-cost-") as workdir:
        return BENCH.run(
            args, lambda config, _: one_run(config, args, Path(workdir)), line=line,
            header=f"{args.rate:.0f} req/s for {args.duration:g}s (warm-up {args.warmup:g}s, "
                   f"idle window {args.idle:g}s), {args.connections} connections",
            conclude=lambda result: conclude(result, args.rate),
            settings={"rate": args.rate, "idle_s": args.idle,
                      "configs": {c: CONFIGS[c] for c in args.servers},
                      "app": "examples/hello.py (hello:app)", "terminal": f"tmux {COLS}x{ROWS}",
                      "load": "built-in fixed-rate asyncio client (keep-alive, no pipelining)"},
            commands={c: shlex.join(TmuxServer(c, 0, Path(workdir)).argv).replace(
                "--port 0", "--port PORT") for c in args.servers},
            extra={"note": "CPU% is of one core; other jobs share the machine, see loadavg"},
        )


if __name__ == "__main__":
    raise SystemExit(main())
