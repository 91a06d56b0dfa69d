"""HTTP/1.1 clients for the benchmarks: the readiness probe, one keep-alive client, and the load
generators (wrk, or a built-in asyncio one when wrk is missing).

Every script that puts its own load on a server (reloads under load, save-to-serve, fixed-rate
load) drives :class:`Http1Client`, so a failed request is classified the same way everywhere.
Stdlib only; imports nothing from the other benchmark modules.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import shlex
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

LOCALHOST = "127.0.0.1"
PERCENTILES = (50, 75, 90, 99)
ERROR_KINDS = ("connect", "read", "write", "timeout", "status")


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (what wrk reports too), on an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * pct // 100))  # ceil without floats drifting
    return float(sorted_values[min(len(sorted_values), int(rank)) - 1])


def new_errors() -> dict[str, int]:
    """Failure counters by kind; ``status`` is for answers the caller did not accept."""
    return dict.fromkeys(ERROR_KINDS, 0)


# --------------------------------------------------------------------------- blocking probe


def http_get(url: str, timeout: float = 1.0) -> tuple[int, bytes]:
    """One GET on a fresh connection, for readiness checks. ``https`` URLs are not verified:
    the benchmarks' certificates are throwaway ones made for the run."""
    parts = urlsplit(url)
    host = parts.hostname or LOCALHOST
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["http/1.1"])
        conn = http.client.HTTPSConnection(host, parts.port or 443, timeout=timeout,
                                           context=context)
    else:
        conn = http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- asyncio client


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Read one HTTP/1.1 response fully: (status, body, connection_must_close)."""
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
        return status, b"", close
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"])), close
    if "chunked" in headers.get("transfer-encoding", ""):
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += (await reader.readexactly(size + 2))[:size]  # chunk (or trailer end) + CRLF
            if size == 0:
                return status, bytes(body), close
    return status, await reader.read(), True  # body delimited by the server closing


class Http1Client:
    """One keep-alive HTTP/1.1 connection to ``host:port``: one request in flight, no
    pipelining, a new connection after the server closes one.

    ``get()`` returns ``(status, body)``, or None after a failure, which is counted by kind in
    ``errors`` (connect, write, read, timeout) and passed to ``on_error``; whether a status is
    acceptable is the caller's call.
    """

    def __init__(
        self,
        host: str,
        port: int,
        path: str = "/",
        *,
        timeout: float = 5.0,
        errors: dict[str, int] | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
        close: bool = False,
        retry_pause: float = 0.01,
    ) -> None:
        extra = "Connection: close\r\n" if close else ""
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
        self.host, self.port, self.timeout = host, port, timeout
        self.errors = new_errors() if errors is None else errors
        self.on_error = on_error
        self.retry_pause = retry_pause  # a refused connect returns at once: do not spin
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    def _fail(self, kind: str, exc: BaseException) -> None:
        self.errors[kind] += 1
        if self.on_error is not None:
            self.on_error(kind, exc)
        self.close()

    async def get(self) -> tuple[int, bytes] | None:
        stream = self._stream
        if stream is None:
            try:
                stream = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), self.timeout)
            except TimeoutError as exc:  # before OSError: TimeoutError is one
                self._fail("timeout", exc)
                return None
            except OSError as exc:
                self._fail("connect", exc)
                await asyncio.sleep(self.retry_pause)
                return None
            self._stream = stream
        reader, writer = stream
        try:
            writer.write(self.request)
            await writer.drain()
        except OSError as exc:
            self._fail("write", exc)
            return None
        try:
            status, body, close = await asyncio.wait_for(read_response(reader), self.timeout)
        except TimeoutError as exc:
            self._fail("timeout", exc)
            return None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                IndexError) as exc:
            self._fail("read", exc)
            return None
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self._stream is not None:
            self._stream[1].close()
        self._stream = None


async def get_once(port: int, timeout: float = 1.0) -> tuple[int, bytes] | None:
    """One ``GET /`` on a fresh connection (``Connection: close``); None on any failure."""
    client = Http1Client(LOCALHOST, port, timeout=timeout, close=True, retry_pause=0.0)
    try:
        return await client.get()
    finally:
        client.close()


# --------------------------------------------------------------------------- load generators


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

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("raw")
        return data


_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_duration_ms(text: str) -> float:
    """``"812.00us"`` / ``"2.31ms"`` / ``"1.02s"`` (wrk's and h2load's units) → milliseconds."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*(us|ms|s|m|h)\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r}")
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
    errors = new_errors()
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
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency", url]


def run_tool(argv: Sequence[str], timeout: float) -> str:
    """Run a load tool to completion and return its stdout; RuntimeError when it fails."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return proc.stdout


async def _builtin_load(url: str, connections: int, duration_s: float) -> LoadResult:
    parts = urlsplit(url)
    host, port, path = parts.hostname or LOCALHOST, parts.port or 80, parts.path or "/"
    errors = new_errors()
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    stop_at = start + duration_s

    async def client() -> None:
        conn = Http1Client(host, port, path, timeout=2.0, errors=errors)
        while loop.time() < stop_at:
            sent = time.perf_counter()
            answer = await conn.get()
            if answer is None:
                continue
            latencies.append((time.perf_counter() - sent) * 1e3)
            if not 200 <= answer[0] < 400:
                errors["status"] += 1
        conn.close()

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


@dataclass(frozen=True)
class HttpLoad:
    """Closed-loop HTTP/1.1 load with the same settings for every server: wrk, or (``builtin``)
    keep-alive asyncio clients, one request in flight each. The built-in one is pure Python
    and saturates well below wrk, so its numbers compare servers within a run, not with wrk."""

    tool: str  # "wrk" | "builtin"
    connections: int
    threads: int = 1  # wrk threads

    @property
    def name(self) -> str:
        return "wrk" if self.tool == "wrk" else "builtin-asyncio"

    def run(self, url: str, duration_s: int) -> LoadResult:
        if self.tool != "wrk":
            return asyncio.run(_builtin_load(url, self.connections, duration_s))
        argv = wrk_command(url, threads=self.threads, connections=self.connections,
                           duration_s=duration_s)
        return parse_wrk(run_tool(argv, duration_s + 30))

    def measure(self, url: str, *, warmup_s: int, duration_s: int) -> LoadResult:
        if warmup_s > 0:
            self.run(url, warmup_s)  # lets the server's caches and the kernel settle; discarded
        return self.run(url, duration_s)

    def command(self, duration_s: int) -> str:
        if self.tool == "wrk":
            return shlex.join(wrk_command(f"http://{LOCALHOST}:PORT/", threads=self.threads,
                                          connections=self.connections, duration_s=duration_s))
        return f"builtin-asyncio connections={self.connections} duration={duration_s}s"
