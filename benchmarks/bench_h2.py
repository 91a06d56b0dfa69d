"""HTTP/2 throughput: devserve vs hypercorn under h2load, h2c (prior knowledge) and TLS (ALPN h2).

Both servers run ``examples/hello.py`` with one worker and the same loop, in interleaved rounds
(the order rotates each round), each run a fresh process on a fresh port. TLS runs use one
throwaway certificate (devserve's dev-certificate generator, in a temp dir) for both servers.
h2load's own warm-up (``--warm-up-time``) is excluded from the numbers. The report is the
per-server median across rounds and the devserve/hypercorn ratio, per mode.

Run from the repo root::

    python benchmarks/bench_h2.py            # 3 rounds x 2 modes x (2 s warm-up + 10 s), ~3 min
    python benchmarks/bench_h2.py --quick    # about 40 s smoke run
    python benchmarks/bench_h2.py --modes h2c --connections 20 --streams 20
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import (
    EXAMPLES,
    LOCALHOST,
    Benchmark,
    Metric,
    ServerSpec,
    dev_certificate,
    pick,
)
from _load import parse_duration_ms, run_tool

APP = "hello:app"
EXPECTED_BODY = b"Hello, world!"
MODES = ("h2c", "tls")
# hypercorn closes an HTTP/2 connection (GOAWAY) after 1000 requests by default, and h2load
# does not reconnect in a timed run: that cap would measure dead clients, not the server.
HYPERCORN_CONFIG = "keep_alive_max_requests = 1000000000\n"

BENCH = Benchmark(
    kind="h2",
    title=f"HTTP/2 {APP}",
    description="devserve vs hypercorn over HTTP/2 (h2load), h2c and TLS.",
    servers=("devserve", "hypercorn"),
    full={"rounds": 3, "duration": 10, "warmup": 2, "connections": 10, "streams": 10,
          "threads": 1},
    quick={"rounds": 2, "duration": 3, "warmup": 1},
    metrics=(
        Metric("requests_per_sec_median", lambda r: r["requests_per_sec"],
               label="req/s (median)", fmt="{:,.0f}", better="higher"),
        Metric("mean_ms_median", lambda r: r["mean_ms"], label="mean ms", better="lower"),
        Metric("errors_total", lambda r: r["failed"] + r["errored"] + r["non_2xx"], fold=sum,
               label="errors", fmt="{}"),
    ),
    packages=("devserve", "hypercorn", "h2", "hpack", "uvloop"),
    tools={"h2load": ("h2load", "--version")},
    aliases={"connections": ("--clients",)},
    variant_key="mode",
    loop=True,
)


@dataclass
class H2LoadResult:
    requests_per_sec: float
    succeeded: int
    failed: int
    errored: int
    non_2xx: int
    mean_ms: float
    max_ms: float
    protocol: str


def parse_h2load(output: str) -> H2LoadResult:
    """The summary lines of ``h2load`` (nghttp2) output."""
    rps = re.search(r"finished in [0-9.]+\w+, ([0-9.]+) req/s", output)
    reqs = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored", output)
    codes = re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    lat = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", output)
    proto = re.search(r"Application protocol: (\S+)", output)
    if not (rps and reqs and codes and lat):
        raise ValueError(f"unrecognised h2load output:\n{output}")
    return H2LoadResult(
        requests_per_sec=float(rps.group(1)),
        succeeded=int(reqs.group(1)), failed=int(reqs.group(2)), errored=int(reqs.group(3)),
        non_2xx=sum(int(g) for g in codes.groups()),
        mean_ms=parse_duration_ms(lat.group(3)), max_ms=parse_duration_ms(lat.group(2)),
        protocol=proto.group(1) if proto else "?",
    )


def h2load_command(url: str, args: argparse.Namespace) -> list[str]:
    return ["h2load", "-D", str(args.duration), "--warm-up-time", str(args.warmup),
            "-c", str(args.connections), "-m", str(args.streams), "-t", str(args.threads), url]


def server_spec(name: str, port: int, loop: str, tls: tuple[Path, Path] | None,
                hypercorn_config: Path | None = None) -> ServerSpec:
    url = f"{'https' if tls else 'http'}://{LOCALHOST}:{port}/"
    py = sys.executable
    if name == "devserve":
        argv = [py, "-m", "devserve", APP, "--app-dir", str(EXAMPLES), "--host", LOCALHOST,
                "--port", str(port), "--loop", loop, "--no-access-log", "--log-level", "warning",
                "--workers", "1"]
        if tls:
            argv += ["--ssl-certfile", str(tls[0]), "--ssl-keyfile", str(tls[1])]
        return ServerSpec(name, argv, url, env={"DEVSERVE_TUI": "off"}, expect_body=EXPECTED_BODY)
    # hypercorn speaks h2c (prior knowledge) on plain TCP and ALPN h2 with a certificate.
    argv = [py, "-m", "hypercorn", APP, "--bind", f"{LOCALHOST}:{port}", "--worker-class",
            loop, "--log-level", "warning", "--workers", "1"]
    if hypercorn_config is not None:
        argv += ["--config", str(hypercorn_config)]
    if tls:
        argv += ["--certfile", str(tls[0]), "--keyfile", str(tls[1])]
    return ServerSpec(name, argv, url, cwd=EXAMPLES, expect_body=EXPECTED_BODY)


def line(run: dict[str, Any]) -> str:
    errors = run["failed"] + run["errored"] + run["non_2xx"]
    note = f"  ({errors} errors!)" if errors else ""
    return (f"{run['requests_per_sec']:>10,.0f} req/s  mean {run['mean_ms']:6.2f} ms"
            f"  [{run['protocol']}]{note}")


def main(argv: list[str] | None = None) -> int:
    parser = BENCH.parser()
    parser.add_argument("--streams", type=int, help="h2load -m concurrent streams per "
                        "connection (10)")
    parser.add_argument("--threads", type=int, help="h2load -t threads (1)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: h2c,tls")
    args = BENCH.parse(parser, argv)
    modes = pick(parser, "--modes", args.modes, MODES)
    if min(args.streams, args.threads) < 1:
        parser.error("--streams and --threads must be >= 1")
    if shutil.which("h2load") is None:
        print("h2load is not installed (Debian/Ubuntu: apt install nghttp2-client)",
              file=sys.stderr)
        return 2
    load_cmd = " ".join(h2load_command("SCHEME://127.0.0.1:PORT/", args))
    with tempfile.TemporaryDirectory(prefix="bench-h2-cert-") as tmp:
        cert = dev_certificate(Path(tmp))
        hypercorn_config = Path(tmp) / "hypercorn.toml"
        hypercorn_config.write_text(HYPERCORN_CONFIG)

        def one_run(name: str, mode: str | None) -> dict[str, Any]:
            tls = cert if mode == "tls" else None
            return BENCH.serve(
                args, lambda port: server_spec(name, port, args.loop, tls, hypercorn_config),
                lambda server: asdict(parse_h2load(run_tool(
                    h2load_command(server.spec.url, args), args.duration + args.warmup + 60))))

        return BENCH.run(
            args, one_run, line=line, variants=modes,
            header=f"modes {','.join(modes)} | loop {args.loop} | {load_cmd}",
            settings={"streams_per_connection": args.streams, "threads": args.threads,
                      "modes": modes, "workers": 1,
                      "tls": "self-signed EC P-256 (devserve dev certificate), ALPN h2, both"},
            commands={
                **{name: server_spec(name, 0, args.loop, None).template()
                   for name in args.servers},
                "tls_extra": "devserve: --ssl-certfile C --ssl-keyfile K; hypercorn: "
                             "--certfile C --keyfile K",
                "hypercorn_config_toml": HYPERCORN_CONFIG.strip(), "load": load_cmd,
            },
            extra={"app": f"examples/{APP}"},
        )


if __name__ == "__main__":
    sys.exit(main())
