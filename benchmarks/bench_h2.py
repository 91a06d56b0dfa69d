"""HTTP/2 throughput: devserve vs hypercorn under h2load, h2c (prior knowledge) and TLS (ALPN h2).

Both servers run ``examples/hello.py`` with one worker and the same loop, in interleaved rounds
within one invocation (the order rotates each round), each run a fresh process on a fresh port.
TLS runs use one throwaway certificate (devserve's dev-certificate generator, in a temp dir)
for both servers. h2load's own warm-up (``--warm-up-time``) is excluded from the numbers.
The report is the per-server median across rounds and the devserve/hypercorn ratio.

Run from the repo root::

    python benchmarks/bench_h2.py            # 3 rounds x 2 modes x (2 s warm-up + 10 s), ~3 min
    python benchmarks/bench_h2.py --quick    # about 40 s smoke run
    python benchmarks/bench_h2.py --modes h2c --clients 20 --streams 20
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    LOCALHOST,
    REPO_ROOT,
    RunningServer,
    ServerError,
    ServerSpec,
    default_loop,
    format_table,
    free_port,
    machine_info,
    median,
    ratio,
    results_path,
    running_server,
    sigterm_as_interrupt,
    stop_process,
    write_json,
)

EXAMPLES = REPO_ROOT / "examples"
APP = "hello:app"
EXPECTED_BODY = b"Hello, world!"
SERVERS = ("devserve", "hypercorn")
MODES = ("h2c", "tls")


@dataclass
class Settings:
    rounds: int
    duration_s: int
    warmup_s: int
    clients: int
    streams: int
    threads: int
    loop: str
    modes: list[str]
    start_timeout: float


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

    @property
    def errors(self) -> int:
        return self.failed + self.errored + self.non_2xx


def _duration_ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"unrecognised h2load duration {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


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
        mean_ms=_duration_ms(lat.group(3)), max_ms=_duration_ms(lat.group(2)),
        protocol=proto.group(1) if proto else "?",
    )


def h2load_command(url: str, settings: Settings) -> list[str]:
    return ["h2load", "-D", str(settings.duration_s), "--warm-up-time", str(settings.warmup_s),
            "-c", str(settings.clients), "-m", str(settings.streams), "-t", str(settings.threads),
            url]


def run_h2load(url: str, settings: Settings) -> H2LoadResult:
    argv = h2load_command(url, settings)
    timeout = settings.duration_s + settings.warmup_s + 60
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"h2load failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return parse_h2load(proc.stdout)


# -- servers -----------------------------------------------------------------------------------
# hypercorn closes an HTTP/2 connection (GOAWAY) after 1000 requests by default, and h2load
# does not reconnect in a timed run: that cap would measure dead clients, not the server.
HYPERCORN_CONFIG = "keep_alive_max_requests = 1000000000\n"


def server_spec(name: str, port: int, loop: str, tls: tuple[Path, Path] | None,
                hypercorn_config: Path | None = None) -> ServerSpec:
    scheme = "https" if tls else "http"
    url = f"{scheme}://{LOCALHOST}:{port}/"
    py = sys.executable
    if name == "devserve":
        argv = [py, "-m", "devserve", APP, "--app-dir", str(EXAMPLES), "--host", LOCALHOST,
                "--port", str(port), "--loop", loop, "--no-access-log", "--log-level", "warning",
                "--workers", "1"]
        if tls:
            argv += ["--ssl-certfile", str(tls[0]), "--ssl-keyfile", str(tls[1])]
        return ServerSpec(name, argv, url, cwd=REPO_ROOT, env={"DEVSERVE_TUI": "off"},
                          expect_body=EXPECTED_BODY)
    if name == "hypercorn":
        # hypercorn speaks h2c (prior knowledge) on plain TCP and ALPN h2 with a certificate.
        argv = [py, "-m", "hypercorn", APP, "--bind", f"{LOCALHOST}:{port}", "--worker-class",
                loop, "--log-level", "warning", "--workers", "1"]
        if hypercorn_config is not None:
            argv += ["--config", str(hypercorn_config)]
        if tls:
            argv += ["--certfile", str(tls[0]), "--keyfile", str(tls[1])]
        return ServerSpec(name, argv, url, cwd=EXAMPLES, expect_body=EXPECTED_BODY)
    raise ValueError(f"unknown server {name!r}")


def _https_ready(url: str, deadline: float, process: subprocess.Popen[bytes]) -> None:
    """_common.wait_ready speaks plain HTTP; a TLS port needs a TLS probe (HTTP/1.1 via ALPN)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    port = int(url.rsplit(":", 1)[1].strip("/"))
    last = "no attempt"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"server exited with code {process.returncode} before it was ready")
        conn = http.client.HTTPSConnection(LOCALHOST, port, timeout=1.0, context=context)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            if response.status == 200 and response.read() == EXPECTED_BODY:
                return
            last = f"HTTP {response.status}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        time.sleep(0.05)
    raise ServerError(f"not ready ({last})")


@contextlib.contextmanager
def serving(spec: ServerSpec, start_timeout: float) -> Iterator[RunningServer]:
    """``running_server`` for h2c; for TLS the same start/stop with a TLS readiness probe."""
    if not spec.url.startswith("https"):
        with running_server(spec, start_timeout=start_timeout) as server:
            yield server
        return
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
    with tempfile.NamedTemporaryFile(prefix=f"bench-{spec.name}-", suffix=".log",
                                     delete=False) as log:
        process = subprocess.Popen(list(spec.argv), cwd=spec.cwd, env=env,
                                   stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = RunningServer(spec=spec, process=process, log_path=Path(log.name))
    try:
        started = time.monotonic()
        try:
            _https_ready(spec.url, started + start_timeout, process)
        except ServerError as exc:
            raise ServerError(f"{spec.name}: {exc}\n  command: {spec.command}\n"
                              f"  log tail:\n{server.log_tail()}") from None
        server.startup_s = time.monotonic() - started
        yield server
    finally:
        stop_process(process)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    from devserve.net.tls import ensure_dev_certificate

    dev = ensure_dev_certificate(directory)
    return dev.cert_path, dev.key_path


# -- rounds and report -------------------------------------------------------------------------
def run_rounds(settings: Settings, cert: tuple[Path, Path], hypercorn_config: Path
               ) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    servers = list(SERVERS)
    for round_no in range(settings.rounds):
        shift = round_no % len(servers)
        order = servers[shift:] + servers[:shift]
        for mode in settings.modes:
            for name in order:
                spec = server_spec(name, free_port(), settings.loop,
                                   cert if mode == "tls" else None, hypercorn_config)
                print(f"  round {round_no + 1}/{settings.rounds} {mode:<3}: {name:<9} ", end="",
                      flush=True)
                with serving(spec, settings.start_timeout) as server:
                    result = run_h2load(spec.url, settings)
                    crashed = server.process.poll() is not None
                if crashed:
                    raise ServerError(f"{name} exited during the load run\n{server.log_tail()}")
                note = f"  ({result.errors} errors!)" if result.errors else ""
                print(f"{result.requests_per_sec:>10,.0f} req/s  mean {result.mean_ms:6.2f} ms"
                      f"  [{result.protocol}]{note}", flush=True)
                runs.append({"round": round_no + 1, "mode": mode, "server": name,
                             "command": spec.command, "cwd": str(spec.cwd),
                             "startup_s": round(server.startup_s, 3), **vars(result)})
    return runs


def summarize(settings: Settings, runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    for mode in settings.modes:
        summary[mode] = {}
        for name in SERVERS:
            mine = [r for r in runs if r["server"] == name and r["mode"] == mode]
            summary[mode][name] = {
                "requests_per_sec_median": round(median([r["requests_per_sec"] for r in mine]), 1),
                "mean_ms_median": round(median([r["mean_ms"] for r in mine]), 3),
                "errors_total": sum(r["failed"] + r["errored"] + r["non_2xx"] for r in mine),
                "rounds": len(mine),
            }
        ours, peer = summary[mode]["devserve"], summary[mode]["hypercorn"]
        rps = ratio(ours["requests_per_sec_median"], peer["requests_per_sec_median"])
        mean = ratio(ours["mean_ms_median"], peer["mean_ms_median"])
        ratios[mode] = {"requests_per_sec": None if rps is None else round(rps, 3),
                        "mean_latency": None if mean is None else round(mean, 3)}
    return {"servers": summary, "ratios_devserve_over_hypercorn": ratios,
            "ratio_note": "devserve median / hypercorn median; req/s: >1 is better, "
                          "mean latency: <1 is better"}


def print_report(settings: Settings, result: dict[str, Any]) -> None:
    rows = []
    for mode in settings.modes:
        for name in SERVERS:
            s = result["servers"][mode][name]
            rows.append([f"{mode} {name}", f"{s['requests_per_sec_median']:,.0f}",
                         f"{s['mean_ms_median']:.2f}", str(s["errors_total"])])
    print()
    print(format_table(["mode server", "req/s (median)", "mean ms", "errors"], rows))
    print()
    for mode, values in result["ratios_devserve_over_hypercorn"].items():
        rps, mean = values["requests_per_sec"], values["mean_latency"]
        print(f"{mode}: devserve/hypercorn req/s "
              f"{'n/a' if rps is None else f'{rps:.2f}x'} (higher is better)   mean latency "
              f"{'n/a' if mean is None else f'{mean:.2f}x'} (lower is better)")


def default_output() -> Path:
    return results_path("h2")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="devserve vs hypercorn over HTTP/2 (h2load).")
    parser.add_argument("--rounds", type=int, help="rounds per server and mode (3; quick: 2)")
    parser.add_argument("--duration", type=int, help="measured seconds per run (10; quick: 3)")
    parser.add_argument("--warmup", type=int, help="h2load warm-up seconds per run (2; quick: 1)")
    parser.add_argument("--clients", type=int, default=10, help="h2load -c connections (10)")
    parser.add_argument("--streams", type=int, default=10,
                        help="h2load -m concurrent streams per connection (10)")
    parser.add_argument("--threads", type=int, default=1, help="h2load -t threads (1)")
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                        help="event loop for both servers (auto: uvloop if importable)")
    parser.add_argument("--modes", default="h2c,tls", help="comma-separated: h2c,tls (both)")
    parser.add_argument("--quick", action="store_true", help="short smoke run (~40 s)")
    parser.add_argument("--start-timeout", type=float, default=20.0, help="readiness deadline")
    parser.add_argument("--output", type=Path, help="JSON path (default benchmarks/results/...)")
    parser.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    args = parser.parse_args(argv)
    defaults = {"rounds": 2, "duration": 3, "warmup": 1} if args.quick else {
        "rounds": 3, "duration": 10, "warmup": 2}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.rounds, args.duration, args.clients, args.streams, args.threads) < 1 or \
            args.warmup < 0:
        parser.error("--rounds, --duration, --clients, --streams, --threads must be >= 1")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes: choose from {', '.join(MODES)} (got {args.modes!r})")
    args.modes = list(dict.fromkeys(modes))
    return args


def main(argv: list[str] | None = None) -> int:
    sigterm_as_interrupt()
    args = parse_args(argv)
    if shutil.which("h2load") is None:
        print("h2load is not installed (Debian/Ubuntu: apt install nghttp2-client)",
              file=sys.stderr)
        return 2
    settings = Settings(
        rounds=args.rounds, duration_s=args.duration, warmup_s=args.warmup,
        clients=args.clients, streams=args.streams, threads=args.threads,
        loop=default_loop() if args.loop == "auto" else args.loop, modes=args.modes,
        start_timeout=args.start_timeout,
    )
    path = None if args.no_save else (args.output or default_output())
    load_cmd = " ".join(h2load_command("SCHEME://127.0.0.1:PORT/", settings))
    print(f"HTTP/2 {APP}: devserve vs hypercorn | modes {','.join(settings.modes)} | loop "
          f"{settings.loop} | {load_cmd} | {settings.rounds} rounds")
    with tempfile.TemporaryDirectory(prefix="bench-h2-cert-") as cert_dir:
        cert = make_certificate(Path(cert_dir))
        hypercorn_config = Path(cert_dir) / "hypercorn.toml"
        hypercorn_config.write_text(HYPERCORN_CONFIG)
        try:
            runs = run_rounds(settings, cert, hypercorn_config)
        except ServerError as exc:
            print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
            return 2
        except (RuntimeError, ValueError, subprocess.SubprocessError) as exc:
            print(f"\nload run failed (servers stopped): {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("\ninterrupted; servers stopped, nothing written", file=sys.stderr)
            return 130
    result = summarize(settings, runs)
    print_report(settings, result)
    record = {
        "benchmark": "h2",
        "app": f"examples/{APP}",
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": {
            "rounds": settings.rounds, "duration_s": settings.duration_s,
            "warmup_s": settings.warmup_s, "clients": settings.clients,
            "streams_per_client": settings.streams, "threads": settings.threads,
            "loop": settings.loop, "modes": settings.modes, "workers": 1,
            "tls": "self-signed EC P-256 (devserve dev certificate), ALPN h2, both servers",
            "order": "rotating interleave, fresh process and port per run",
        },
        "commands": {
            name: server_spec(name, 0, settings.loop, None).command.replace(
                f"{LOCALHOST}:0", f"{LOCALHOST}:PORT").replace("--port 0", "--port PORT")
            for name in SERVERS
        } | {"tls_extra": "devserve: --ssl-certfile C --ssl-keyfile K; hypercorn: --certfile C "
                          "--keyfile K", "hypercorn_config_toml": HYPERCORN_CONFIG.strip(),
             "load": load_cmd},
        "machine": machine_info(packages=["devserve", "hypercorn", "h2", "hpack", "uvloop"],
                                tools={"h2load": ["h2load", "--version"]}),
        **result,
        "runs": runs,
    }
    if path is not None:
        write_json(path, record)
        print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
