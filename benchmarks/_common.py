"""Shared helpers for the devserve benchmarks.

Every benchmark does the same dance: find a free port, start a server as a child process, wait
until it really answers, put load on it, stop it no matter what, and record where the numbers
came from. Keeping that here means each benchmark script only states *what* it measures.

Nothing in this module knows about a particular server or benchmark. Stdlib only, so a
benchmark runs wherever the servers themselves run.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
LOCALHOST = "127.0.0.1"
PERCENTILES = (50, 75, 90, 99)


# --------------------------------------------------------------------------- ports & processes


def free_port(host: str = LOCALHOST) -> int:
    """Ask the kernel for an unused port (bind to 0) instead of guessing one that may be taken.

    There is a small race between closing this socket and the server binding the port; on a
    loopback-only benchmark host it is negligible, and start-up failure is reported clearly.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def default_loop() -> str:
    """``uvloop`` when importable, else ``asyncio``: the same choice for every server compared."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: the exact argv, where, and the URL that proves it is ready."""

    name: str
    argv: Sequence[str]
    url: str
    cwd: Path = REPO_ROOT
    env: Mapping[str, str] = field(default_factory=dict)
    expect_body: bytes | None = None

    @property
    def command(self) -> str:
        return subprocess.list2cmdline(list(self.argv))


class ServerError(RuntimeError):
    """A server did not come up (exited early, or never answered before the deadline)."""


@dataclass
class RunningServer:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    log_path: Path
    startup_s: float = 0.0

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def http_get(url: str, timeout: float = 1.0) -> tuple[int, bytes]:
    """One plain HTTP/1.1 GET with a fresh connection; used for readiness and sanity checks."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(
        parts.hostname or LOCALHOST, parts.port or 80, timeout=timeout
    )
    try:
        conn.request("GET", parts.path or "/")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(
    url: str,
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    process: subprocess.Popen[bytes] | None = None,
) -> float:
    """Poll ``url`` until it answers 200, returning the seconds it took.

    Polling with a deadline instead of sleeping a fixed time: a fixed sleep is either too
    short on a slow machine (load hits a half-started server) or wasted time on a fast one.
    Raises ServerError if the process exits first or the deadline passes.
    """
    start = time.monotonic()
    deadline = start + timeout
    last_error = "no attempt"
    while True:
        if process is not None and process.poll() is not None:
            raise ServerError(f"server exited with code {process.returncode} before it was ready")
        try:
            status, _ = http_get(url, timeout=min(1.0, max(0.05, deadline - time.monotonic())))
            if status == 200:
                return time.monotonic() - start
            last_error = f"HTTP {status}"
        except (OSError, http.client.HTTPException) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise ServerError(f"not ready after {timeout:.1f}s ({last_error})")
        time.sleep(interval)


def stop_process(process: subprocess.Popen[Any], *, grace: float = 5.0) -> int | None:
    """Stop a child we started: SIGTERM to its PID, then SIGKILL after ``grace`` seconds.

    SIGTERM first so the server shuts down its own workers. The SIGKILL fallback goes to the
    child's process group while the child is still alive (it was started in its own session,
    so that group holds only what we started) to leave no orphaned worker behind.
    """
    if process.poll() is not None:
        return process.returncode
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        return process.wait(timeout=grace)
    return None


@contextlib.contextmanager
def running_server(
    spec: ServerSpec,
    *,
    start_timeout: float = 20.0,
    stop_grace: float = 5.0,
    log_dir: Path | None = None,
) -> Iterator[RunningServer]:
    """Start ``spec``, wait until it is ready, yield it, and always stop it (even on Ctrl+C).

    Output goes to a log file rather than a pipe: a chatty server writing into a pipe nobody
    reads would block and skew the measurement.
    """
    log_dir = log_dir or Path(tempfile.gettempdir())
    log_dir.mkdir(parents=True, exist_ok=True)
    fd, log_name = tempfile.mkstemp(prefix=f"bench-{spec.name}-", suffix=".log", dir=log_dir)
    log_path = Path(log_name)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(
            list(spec.argv),
            cwd=spec.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: Ctrl+C in the terminal reaches us, and we stop the server in order.
            start_new_session=True,
        )
    server = RunningServer(spec=spec, process=process, log_path=log_path)
    try:
        try:
            server.startup_s = wait_ready(spec.url, timeout=start_timeout, process=process)
            if spec.expect_body is not None:
                status, body = http_get(spec.url)
                if status != 200 or body != spec.expect_body:
                    raise ServerError(f"unexpected answer from {spec.url}: {status} {body[:80]!r}")
        except ServerError as exc:
            raise ServerError(
                f"{spec.name}: {exc}\n  command: {spec.command}\n  log tail:\n{server.log_tail()}"
            ) from None
        yield server
    finally:
        stop_process(process, grace=stop_grace)


def sigterm_as_interrupt() -> None:
    """Make SIGTERM behave like Ctrl+C so ``finally`` blocks stop the servers we started."""

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError, AttributeError):  # not main thread / no SIGTERM
        signal.signal(signal.SIGTERM, _raise)


# --------------------------------------------------------------------------- load results


@dataclass
class LoadResult:
    """What one load run measured; the same shape whichever load generator produced it."""

    tool: str
    requests: int
    duration_s: float
    requests_per_sec: float
    latency_ms: dict[str, float]  # "p50", "p75", "p90", "p99"
    errors: dict[str, int]  # connect/read/write/timeout/status (non-2xx/3xx)
    raw: str = ""

    @property
    def p99_ms(self) -> float:
        return self.latency_ms.get("p99", float("nan"))

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_json(self, *, include_raw: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not include_raw:
            data.pop("raw")
        return data


_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_duration_ms(text: str) -> float:
    """``"812.00us"`` / ``"2.31ms"`` / ``"1.02s"`` (wrk's units) → milliseconds."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*(us|ms|s|m|h)\s*", text)
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _TIME_UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> LoadResult:
    """Parse ``wrk --latency`` output. Raises ValueError when the run produced no numbers."""
    rps_match = re.search(r"^Requests/sec:\s*([0-9.]+)", output, re.MULTILINE)
    total_match = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+),", output, re.MULTILINE)
    if not rps_match or not total_match:
        raise ValueError(f"unrecognised wrk output:\n{output}")
    latency: dict[str, float] = {}
    for pct, value in re.findall(r"^\s+(\d+(?:\.\d+)?)%\s+([0-9.]+\w+)\s*$", output, re.MULTILINE):
        latency[f"p{float(pct):g}"] = parse_duration_ms(value)
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0}
    sock_match = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock_match:
        for key, value in zip(
            ("connect", "read", "write", "timeout"), sock_match.groups(), strict=True
        ):
            errors[key] = int(value)
    status_match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if status_match:
        errors["status"] = int(status_match.group(1))
    return LoadResult(
        tool="wrk",
        requests=int(total_match.group(1)),
        duration_s=parse_duration_ms(total_match.group(2)) / 1e3,
        requests_per_sec=float(rps_match.group(1)),
        latency_ms=latency,
        errors=errors,
        raw=output,
    )


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def wrk_command(url: str, *, threads: int, connections: int, duration_s: int) -> list[str]:
    """wrk takes whole-number durations; ``--latency`` adds the percentile block we parse."""
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        url,
    ]


def run_wrk(url: str, *, threads: int, connections: int, duration_s: int) -> LoadResult:
    argv = wrk_command(url, threads=threads, connections=connections, duration_s=duration_s)
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 30, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return parse_wrk(proc.stdout)


# --------------------------------------------------------------------------- built-in load


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (what wrk reports too), on an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * pct // 100))  # ceil without floats drifting
    return float(sorted_values[min(len(sorted_values), int(rank)) - 1])


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response fully; return (status, connection_must_close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip().lower()
    close = headers.get("connection") == "close"
    if status < 200 or status in (204, 304):
        return status, close
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", ""):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)  # chunk data (or trailer end) + CRLF
            if size == 0:
                break
    else:
        await reader.read()  # body delimited by the server closing the connection
        close = True
    return status, close


async def _builtin_load(url: str, connections: int, duration_s: float) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or LOCALHOST, parts.port or 80
    path = parts.path or "/"
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0}
    loop = asyncio.get_running_loop()
    start = loop.time()
    stop_at = start + duration_s

    async def client() -> None:
        writer: asyncio.StreamWriter | None = None
        reader: asyncio.StreamReader | None = None
        while loop.time() < stop_at:
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(host, port)
                except OSError:
                    errors["connect"] += 1
                    await asyncio.sleep(0.01)
                    continue
            assert reader is not None
            sent = time.perf_counter()
            try:
                writer.write(request)  # one request in flight per connection: no pipelining
                await writer.drain()
            except OSError:
                errors["write"] += 1
                writer.close()
                writer = None
                continue
            try:
                status, close = await asyncio.wait_for(_read_response(reader), timeout=2.0)
            except TimeoutError:
                errors["timeout"] += 1
                close = True
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                errors["read"] += 1
                close = True
            else:
                latencies.append((time.perf_counter() - sent) * 1e3)
                if not 200 <= status < 400:
                    errors["status"] += 1
            if close:
                writer.close()
                writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = loop.time() - start
    latencies.sort()
    return LoadResult(
        tool="builtin-asyncio",
        requests=len(latencies),
        duration_s=elapsed,
        requests_per_sec=len(latencies) / elapsed if elapsed > 0 else 0.0,
        latency_ms={f"p{p}": percentile(latencies, p) for p in PERCENTILES},
        errors=errors,
    )


def run_builtin_load(url: str, *, connections: int, duration_s: float) -> LoadResult:
    """Fallback when wrk is missing: keep-alive clients, one request in flight each.

    Pure Python, so it saturates well below wrk and its latencies include client overhead.
    Numbers are comparable *between servers in the same run*, not with wrk runs.
    """
    return asyncio.run(_builtin_load(url, connections, duration_s))


# --------------------------------------------------------------------------- reporting


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def ratio(numerator: float, denominator: float) -> float | None:
    if not denominator or denominator != denominator:  # zero or NaN
        return None
    return numerator / denominator


def package_versions(names: Sequence[str]) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def tool_version(argv: Sequence[str]) -> str | None:
    """First output line of ``argv`` (e.g. ``wrk -v``, which exits 1 but prints its version)."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _git_commit() -> str | None:
    """The commit benchmarked (read-only ``git rev-parse``); None outside a checkout."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def machine_info(
    packages: Sequence[str] = (), tools: Mapping[str, Sequence[str]] | None = None
) -> dict[str, Any]:
    """Where the numbers came from: a ratio means little without the machine that produced it."""
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": len(affinity) if affinity is not None else os.cpu_count(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(packages),
        "tools": {name: tool_version(argv) for name, argv in (tools or {}).items()},
        "git_commit": _git_commit(),
    }


def host_label() -> str:
    """Hostname safe for a filename, or ``local`` when there is none."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", socket.gethostname()).strip("-.")
    return name or "local"


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain aligned text table (first column left, numbers right): pasteable into a PR."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(row) for row in rows)
    return "\n".join(out)


def results_path(kind: str, directory: Path | None = None) -> Path:
    """``<kind>-<date>-<host>.json`` in *directory* (default: benchmarks/results/); a later run
    the same day gets a ``-2``, ``-3``... suffix and never overwrites an earlier result."""
    import datetime as dt

    directory = RESULTS_DIR if directory is None else directory
    stem = f"{kind}-{dt.datetime.now().astimezone().date().isoformat()}-{host_label()}"
    path = directory / f"{stem}.json"
    n = 2
    while path.exists():
        path = directory / f"{stem}-{n}.json"
        n += 1
    return path


def summarize_load_runs(servers: list[str], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-server medians of load-generator rounds and devserve/peer ratios (the first
    server is devserve)."""
    nan = float("nan")
    summary: dict[str, Any] = {}
    for name in servers:
        mine = [r for r in runs if r["server"] == name]
        summary[name] = {
            "requests_per_sec_median": round(median([r["requests_per_sec"] for r in mine]), 1),
            "p50_ms_median": round(median([r["latency_ms"].get("p50", nan) for r in mine]), 3),
            "p99_ms_median": round(median([r["latency_ms"].get("p99", nan) for r in mine]), 3),
            "errors_total": sum(sum(r["errors"].values()) for r in mine),
            "rounds": len(mine),
        }
    ours = summary["devserve"]
    ratios: dict[str, dict[str, float | None]] = {}
    for peer in servers[1:]:
        rps = ratio(ours["requests_per_sec_median"], summary[peer]["requests_per_sec_median"])
        p99 = ratio(ours["p99_ms_median"], summary[peer]["p99_ms_median"])
        ratios[peer] = {
            "requests_per_sec": None if rps is None else round(rps, 3),
            "p99": None if p99 is None else round(p99, 3),
        }
    return {
        "servers": summary,
        "ratios_devserve_over": ratios,
        "ratio_note": "devserve median / peer median; req/s: >1 is better, p99: <1 is better",
    }
