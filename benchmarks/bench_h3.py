"""HTTP/3 throughput: devserve (``--http3``) vs hypercorn (``--quic-bind``) over one QUIC
connection, sequential requests and 10 concurrent streams.

Both servers run ``examples/hello.py`` with one worker, the same certificate and loop, in
interleaved rounds (fresh process and port each run). The load client is aioquic in this process
(``tests/apps/h3_client.py``): no h2load-style HTTP/3 tool is assumed. A Python client is itself
slow, so absolute numbers are client-bound and the ratio compresses toward 1; the same client
measures both servers. A 1 s warm-up on each connection is excluded.

Run from the repo root::

    python benchmarks/bench_h3.py             # 3 rounds x 2 scenarios x 5 s per server, ~2 min
    python benchmarks/bench_h3.py --quick     # 1 round x 2 s
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _common import (
    EXAMPLES,
    LOCALHOST,
    REPO_ROOT,
    Benchmark,
    Metric,
    ServerSpec,
    dev_certificate,
)

sys.path.insert(0, str(REPO_ROOT / "tests" / "apps"))
import h3_client  # the test suite's aioquic client

APP = "hello:app"
EXPECTED_BODY = b"Hello, world!"
SCENARIOS = {"sequential": 1, "concurrent-10": 10}

BENCH = Benchmark(
    kind="h3",
    title=f"HTTP/3 {APP}",
    description="devserve vs hypercorn over HTTP/3 (aioquic client, one connection per run).",
    servers=("devserve", "hypercorn"),
    full={"rounds": 3, "duration": 5.0, "warmup": 1.0},
    quick={"rounds": 1, "duration": 2.0},
    metrics=(
        Metric("requests_per_sec_median", lambda r: r["requests_per_sec"],
               label="req/s (median)", fmt="{:,.0f}", better="higher"),
        Metric("errors_total", lambda r: r["errors"], fold=sum, label="errors", fmt="{}"),
        Metric("connection_survived", lambda r: r["connection_survived"], fold=all,
               label="connection kept"),
    ),
    packages=("devserve", "hypercorn", "aioquic", "uvloop"),
    variant_key="scenario",
    loop=True,
    start_timeout=30.0,
)


def _quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A probe that timed out before the server listened leaves aioquic's handshake waiter
    failing later with ConnectionError, unretrieved: expected while waiting, not news."""
    if not isinstance(context.get("exception"), ConnectionError):
        loop.default_exception_handler(context)


def h3_probe(url: str, timeout: float) -> tuple[int, bytes]:
    async def get() -> tuple[int, bytes]:
        asyncio.get_running_loop().set_exception_handler(_quiet)
        async with h3_client.h3_connect(LOCALHOST, urlsplit(url).port or 443, timeout) as client:
            answer = await asyncio.wait_for(client.request("GET", "/"), timeout)
        return answer.status, bytes(answer.body)

    return asyncio.run(get())


def server_spec(name: str, port: int, loop: str, cert: tuple[Path, Path]) -> ServerSpec:
    py = sys.executable
    if name == "devserve":
        argv = [py, "-m", "devserve", APP, "--host", LOCALHOST, "--port", str(port), "--http3",
                "--ssl-certfile", str(cert[0]), "--ssl-keyfile", str(cert[1]), "--workers", "1",
                "--loop", loop, "--no-access-log", "--tui", "off", "--log-level", "warning"]
    else:
        argv = [py, "-m", "hypercorn", APP, "--bind", f"{LOCALHOST}:{port}",
                "--quic-bind", f"{LOCALHOST}:{port}", "--certfile", str(cert[0]),
                "--keyfile", str(cert[1]), "--worker-class", loop, "--workers", "1",
                "--log-level", "warning"]
    return ServerSpec(name, argv, f"https://{LOCALHOST}:{port}/", cwd=EXAMPLES,
                      expect_body=EXPECTED_BODY, probe=h3_probe)


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
        return {"requests": done, "errors": errors, "requests_per_sec": done / duration,
                "connection_survived": not client.terminated.done()}


def line(run: dict[str, Any]) -> str:
    return f"{run['requests_per_sec']:8.0f} req/s  errors {run['errors']}"


def main(argv: list[str] | None = None) -> int:
    args = BENCH.parse(BENCH.parser(), argv)
    with tempfile.TemporaryDirectory(prefix="bench-h3-") as tmp:
        cert = dev_certificate(Path(tmp))

        def one_run(name: str, scenario: str | None) -> dict[str, Any]:
            streams = SCENARIOS[scenario or ""]
            return BENCH.serve(
                args, lambda port: server_spec(name, port, args.loop, cert),
                lambda server: asyncio.run(_load(server.spec.port, streams, args.duration,
                                                 args.warmup)), log_dir=Path(tmp))

        return BENCH.run(
            args, one_run, line=line, variants=list(SCENARIOS),
            header=f"loop {args.loop} | aioquic client, one connection per run, "
                   f"{args.warmup:g}s warm-up",
            settings={"scenarios": SCENARIOS},
            commands={name: server_spec(name, 0, args.loop, (Path("C"), Path("K"))).template()
                      for name in args.servers},
            extra={"app": f"examples/{APP}", "goal": "devserve >= 1.5x hypercorn req/s",
                   "client": "aioquic (tests/apps/h3_client.py), one connection per run, in "
                             "the benchmark process"},
        )


if __name__ == "__main__":
    sys.exit(main())
