"""The one runner every benchmark script configures.

A script states *what* it measures: a :class:`Benchmark` (results name, servers, default and
``--quick`` settings, the :class:`Metric` figures of its report), a function that builds a
:class:`ServerSpec` (argv, cwd, readiness probe) for a server and port, and a function that
measures one run. This module does the rest the same way for all of them: common arguments
(``--rounds --duration --warmup --connections --servers --loop --quick --out --no-save``),
interleaved rounds in rotating order with a fresh process on a free port per run, always
stopping the servers, medians per server, devserve/peer ratios side by side, and a JSON result
named ``<kind>-<date>-<host>.json`` with the machine, settings and exact commands.

Helpers live in ``_servers.py`` (one server process: spec, readiness, stop; re-exported here),
``_load.py`` (HTTP/1.1 clients and load generators) and ``_machine.py`` (where the numbers came
from). Stdlib only; devserve itself is imported only for a TLS certificate.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _load import LOCALHOST as LOCALHOST
from _load import HttpLoad, wrk_available
from _machine import REPO_ROOT as REPO_ROOT
from _machine import host_label, loadavg, machine_info
from _machine import tree_state as tree_state
from _servers import RunningServer as RunningServer
from _servers import ServerError as ServerError
from _servers import ServerSpec as ServerSpec
from _servers import free_port as free_port
from _servers import measure_server
from _servers import tree_usage as tree_usage
from _servers import wait_ready as wait_ready

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
EXAMPLES = REPO_ROOT / "examples"
ORDER = "rotating interleave, fresh process and port per run"


# --------------------------------------------------------------------------- process


def default_loop() -> str:
    """``uvloop`` when importable, else ``asyncio``: the same choice for every server compared."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def dev_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway localhost certificate and key from devserve's dev-certificate code.

    devserve is imported here rather than at the top so the scripts that need no TLS also run
    where devserve is not importable (the HTTP/1.1 script's ``DEVSERVE_BENCH_CMD`` override).
    """
    from devserve.net.tls import ensure_dev_certificate

    dev = ensure_dev_certificate(directory)
    return dev.cert_path, dev.key_path


def sigterm_as_interrupt() -> None:
    """Make SIGTERM behave like Ctrl+C so ``finally`` blocks stop the servers we started."""

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError, AttributeError):  # not main thread / no SIGTERM
        signal.signal(signal.SIGTERM, _raise)


# --------------------------------------------------------------------------- rounds


def run_rounds(servers: Sequence[str], rounds: int,
               one_run: Callable[[str, str | None], Mapping[str, Any]], *,
               line: Callable[[dict[str, Any]], str], variants: Sequence[str] = (),
               variant_key: str = "variant") -> list[dict[str, Any]]:
    """Every server once per round (and per variant: mode, scenario, app), the order rotating
    each round (d,u / u,d / ...) so slow drift on the machine hits every server alike."""
    runs: list[dict[str, Any]] = []
    width = max(len(name) for name in servers)
    each: Sequence[str | None] = variants or [None]
    for round_no in range(1, rounds + 1):
        shift = (round_no - 1) % len(servers)
        order = [*servers[shift:], *servers[:shift]]
        for variant in each:
            where = f" {variant}" if variant else ""
            for name in order:
                print(f"  round {round_no}/{rounds}{where}: {name:<{width}}  ", end="", flush=True)
                run = {"round": round_no, **({variant_key: variant} if variant else {}),
                       "server": name, **one_run(name, variant)}
                print(line(run), flush=True)
                runs.append(run)
    return runs


# --------------------------------------------------------------------------- summary and report


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator or denominator != denominator:  # None, 0 or NaN
        return None
    return numerator / denominator


def _clean(value: Any) -> Any:
    """Rounded for the JSON file; NaN (no values) becomes null."""
    if isinstance(value, float):
        return None if value != value else round(value, 3)
    return value


def counts(by_kind: Mapping[str, int]) -> str:
    """``read=5,timeout=1``: the non-zero counts of a by-kind dict, or ``-``."""
    return ",".join(f"{k}={v}" for k, v in by_kind.items() if v) or "-"


@dataclass(frozen=True)
class Metric:
    """One figure of a report: read from each run (a number, or a list of them), folded across
    the rounds (median by default), and, when ``better`` says which way is good, compared as a
    devserve/peer ratio."""

    name: str  # its key in the summary, e.g. "p99_ms_median"
    get: Callable[[dict[str, Any]], Any]
    fold: Callable[[list[Any]], Any] = median
    label: str = ""  # column header of the printed table; empty: in the JSON only
    fmt: str = "{:,.2f}"
    better: str | None = None  # "higher" | "lower"

    def show(self, value: Any) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, bool):
            return "yes" if value else "NO"
        if isinstance(value, dict):
            return counts(value)
        return self.fmt.format(value)


def _fold(runs: list[dict[str, Any]], metrics: Sequence[Metric]) -> dict[str, Any]:
    folded: dict[str, Any] = {}
    for metric in metrics:
        values: list[Any] = []
        for run in runs:
            value = metric.get(run)
            values.extend(value if isinstance(value, list) else [value])
        folded[metric.name] = _clean(metric.fold(values))
    folded["rounds"] = len(runs)
    return folded


def summarize(runs: list[dict[str, Any]], servers: Sequence[str], metrics: Sequence[Metric], *,
              variants: Sequence[str] = (), variant_key: str = "variant") -> dict[str, Any]:
    """Per-server figures and ``ours/peer`` ratios (ours: the servers named devserve...),
    keyed by variant first when there are variants."""
    ours = [s for s in servers if s.startswith("devserve")]
    peers = [s for s in servers if s not in ours]
    compared = [m for m in metrics if m.better]

    def one(mine: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
        figures = {s: _fold([r for r in mine if r["server"] == s], metrics) for s in servers}
        ratios = {f"{o}/{p}": {m.name: _clean(ratio(figures[o][m.name], figures[p][m.name]))
                               for m in compared} for o in ours for p in peers}
        return figures, ratios

    if not variants:
        figures, ratios = one(runs)
    else:
        pairs = {v: one([r for r in runs if r.get(variant_key) == v]) for v in variants}
        figures = {v: pair[0] for v, pair in pairs.items()}
        ratios = {v: pair[1] for v, pair in pairs.items()}
    note = ", ".join(f"{m.label or m.name}: {'>' if m.better == 'higher' else '<'}1 is better"
                     for m in compared)
    return {"servers": figures, "ratios": ratios,
            "ratio_note": f"devserve median / peer median; {note}" if compared else ""}


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain aligned text table (first column left, numbers right): pasteable into a PR."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def report(result: Mapping[str, Any], metrics: Sequence[Metric],
           variants: Sequence[str] = ()) -> str:
    """The medians table, then one line per devserve/peer pair with its ratios."""
    shown = [m for m in metrics if m.label]
    by_variant = ({v: result["servers"][v] for v in variants} if variants
                  else {"": result["servers"]})
    rows = [[f"{v} {name}".strip(), *(m.show(figures[m.name]) for m in shown)]
            for v, per_server in by_variant.items() for name, figures in per_server.items()]
    lines = ["", format_table(["server", *(m.label for m in shown)], rows), ""]
    ratios = {v: result["ratios"][v] for v in variants} if variants else {"": result["ratios"]}
    for v, pairs in ratios.items():
        for pair, values in pairs.items():
            parts = [f"{m.label.split(' (')[0] or m.name} {_times(values[m.name])}"
                     f" ({m.better} is better)" for m in metrics if m.name in values]
            lines.append(f"{v + ': ' if v else ''}{pair}: " + "   ".join(parts))
    return "\n".join(lines)


# Closed-loop HTTP load runs (LoadResult records): bench_http, bench_wsgi.
LOAD_METRICS = (
    Metric("requests_per_sec_median", lambda r: r["requests_per_sec"], label="req/s (median)",
           fmt="{:,.0f}", better="higher"),
    Metric("p50_ms_median", lambda r: r["latency_ms"].get("p50"), label="p50 ms"),
    Metric("p99_ms_median", lambda r: r["latency_ms"].get("p99"), label="p99 ms",
           better="lower"),
    Metric("errors_total", lambda r: sum(r["errors"].values()), fold=sum, label="errors",
           fmt="{}"),
)


def load_line(run: dict[str, Any]) -> str:
    """The progress line of one closed-loop load run."""
    errors = sum(run["errors"].values())
    note = f"  ({errors} errors!)" if errors else ""
    return (f"{run['requests_per_sec']:>10,.0f} req/s  p99 {run['latency_ms'].get('p99', 0):7.2f}"
            f" ms  (ready in {run['startup_s']:.2f}s){note}")


# --------------------------------------------------------------------------- results


def results_path(kind: str, directory: Path | None = None) -> Path:
    """``<kind>-<date>-<host>.json`` in *directory* (default: benchmarks/results/); a later run
    the same day gets a ``-2``, ``-3``... suffix and never overwrites an earlier result."""
    directory = RESULTS_DIR if directory is None else directory
    stem = f"{kind}-{dt.datetime.now().astimezone().date().isoformat()}-{host_label()}"
    path = directory / f"{stem}.json"
    n = 2
    while path.exists():
        path = directory / f"{stem}-{n}.json"
        n += 1
    return path


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def pick(parser: argparse.ArgumentParser, flag: str, text: str,
         choices: Sequence[str]) -> list[str]:
    """A comma-separated subset of ``choices`` (deduplicated, in the order given)."""
    chosen = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not chosen or set(chosen) - set(choices):
        parser.error(f"{flag}: choose from {', '.join(choices)} (got {text!r})")
    return chosen


# --------------------------------------------------------------------------- the benchmark


_COMMON_HELP = {
    "rounds": "rounds per server",
    "duration": "seconds of load measured per run",
    "warmup": "discarded warm-up seconds per run",
    "connections": "concurrent client connections",
}


@dataclass(frozen=True)
class Benchmark:
    """What a script configures; ``full``/``quick`` hold the defaults of the common arguments
    it uses (and of its own arguments whose default is None)."""

    kind: str  # results file prefix and the record's "benchmark"
    title: str  # first word(s) of the header line
    description: str  # --help
    servers: Sequence[str]  # every server (or configuration) it can compare, devserve first
    full: Mapping[str, float]
    quick: Mapping[str, float]
    metrics: Sequence[Metric]
    default_servers: Sequence[str] = ()
    packages: Sequence[str] = ()
    tools: Mapping[str, Sequence[str]] = field(default_factory=dict)
    aliases: Mapping[str, Sequence[str]] = field(default_factory=dict)  # {"connections": ...}
    variant_key: str = "variant"
    loop: bool = False  # --loop for every server
    http_load: bool = False  # --load wrk|builtin and --threads (wrk threads)
    start_timeout: float = 20.0

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(description=self.description)
        for key, text in _COMMON_HELP.items():
            if key in self.full:
                default = self.full[key]
                quick = f"; quick: {self.quick[key]}" if key in self.quick else ""
                parser.add_argument(f"--{key}", *self.aliases.get(key, ()), type=type(default),
                                    help=f"{text} ({default}{quick})")
        parser.add_argument("--servers", *self.aliases.get("servers", ()),
                            default=",".join(self.default_servers or self.servers),
                            help=f"comma-separated, from {','.join(self.servers)} "
                                 f"(default {','.join(self.default_servers or self.servers)})")
        if "devserve" in self.servers:
            parser.add_argument("--peers", help="the same as --servers devserve,PEERS")
        if self.loop:
            parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                                help="event loop for every server (auto: uvloop if importable)")
        if self.http_load:
            parser.add_argument("--load", choices=["auto", "wrk", "builtin"], default="auto",
                                help="load generator (auto: wrk if installed, else built-in)")
            parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
        parser.add_argument("--quick", action="store_true", help="a short smoke run")
        parser.add_argument("--start-timeout", type=float, default=self.start_timeout,
                            help=f"readiness deadline in seconds ({self.start_timeout:g})")
        parser.add_argument("--out", "--output", type=Path,
                            help="result JSON file, or an existing directory for the usual name"
                                 " (default benchmarks/results/<kind>-<date>-<host>.json)")
        parser.add_argument("--no-save", action="store_true", help="print only, write no JSON")
        return parser

    def parse(self, parser: argparse.ArgumentParser, argv: Sequence[str] | None
              ) -> argparse.Namespace:
        args = parser.parse_args(argv)
        for key, value in {**self.full, **(self.quick if args.quick else {})}.items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)
        low = [k for k in ("rounds", "duration", "connections") if k in self.full
               and getattr(args, k) <= 0]
        if low or ("warmup" in self.full and args.warmup < 0):
            parser.error("--rounds, --duration, --connections must be > 0, --warmup >= 0")
        servers = f"devserve,{args.peers}" if getattr(args, "peers", None) else args.servers
        args.servers = pick(parser, "--servers", servers, self.servers)
        if self.loop:
            args.loop = default_loop() if args.loop == "auto" else args.loop
        if self.http_load:
            args.load = args.load if args.load != "auto" else (
                "wrk" if wrk_available() else "builtin")
            if args.load == "wrk" and not wrk_available():
                parser.error("wrk is not installed; use --load builtin")
        return args

    def http_load_of(self, args: argparse.Namespace) -> HttpLoad:
        return HttpLoad(args.load, args.connections, args.threads)

    def serve(self, args: argparse.Namespace, spec_at: Callable[[int], ServerSpec],
              measure: Callable[[RunningServer], Mapping[str, Any]],
              log_dir: Path | None = None) -> dict[str, Any]:
        """One run on a fresh server: ``spec_at`` a free port, started, measured, stopped."""
        return measure_server(spec_at(free_port()), measure, start_timeout=args.start_timeout,
                              log_dir=log_dir)

    def load_run(self, args: argparse.Namespace, spec_at: Callable[[int], ServerSpec]
                 ) -> dict[str, Any]:
        """One closed-loop load run on a fresh server: the warm-up (discarded), the measure."""
        load = self.http_load_of(args)
        return self.serve(args, spec_at, lambda server: load.measure(
            server.spec.url, warmup_s=args.warmup, duration_s=args.duration).to_json())

    def settings(self, args: argparse.Namespace) -> dict[str, Any]:
        """The common arguments as the record's settings."""
        names = {"rounds": "rounds", "duration": "duration_s", "warmup": "warmup_s",
                 "connections": "connections"}
        settings: dict[str, Any] = {names[k]: getattr(args, k) for k in names if k in self.full}
        if self.loop:
            settings["loop"] = args.loop
        if self.http_load:
            settings |= {"load_generator": self.http_load_of(args).name,
                         "load_threads": args.threads}
        return settings

    def output(self, args: argparse.Namespace, *, scratch: bool = False) -> Path | None:
        """Where the record goes; a ``scratch`` run (not a devserve result) defaults to the
        temp dir and may not write into benchmarks/results/."""
        if args.no_save:
            return None
        if args.out is not None and not args.out.is_dir():
            path: Path = args.out
        else:
            path = results_path(self.kind, args.out or (
                Path(tempfile.gettempdir()) if scratch else None))
        if scratch and RESULTS_DIR.resolve() in path.resolve().parents:
            raise SystemExit(f"refusing {path}: results/ holds real devserve results only")
        return path

    def run(self, args: argparse.Namespace,
            one_run: Callable[[str, str | None], Mapping[str, Any]], *,
            line: Callable[[dict[str, Any]], str], header: str, variants: Sequence[str] = (),
            settings: Mapping[str, Any] | None = None, commands: Mapping[str, Any] | None = None,
            extra: Mapping[str, Any] | None = None,
            conclude: Callable[[dict[str, Any]], list[str]] | None = None,
            notes: Sequence[str] = (), scratch: bool = False) -> int:
        """Rounds, report, record: the exit status of the script (2: a server or the load
        failed, 130: interrupted; servers are stopped either way)."""
        sigterm_as_interrupt()
        path = self.output(args, scratch=scratch)
        print(f"{self.title}: {' vs '.join(args.servers)} | {header} | {args.rounds} round(s)")
        if self.http_load and args.load == "builtin":
            notes = [*notes, "wrk not used; the Python load generator caps req/s, compare ratios"]
        for note in notes:
            print(f"  NOTE: {note}")
        load_before = loadavg()
        try:
            runs = run_rounds(args.servers, args.rounds, one_run, line=line, variants=variants,
                              variant_key=self.variant_key)
        except ServerError as exc:
            print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
            return 2
        except (RuntimeError, ValueError, subprocess.SubprocessError) as exc:
            print(f"\nload run failed (servers stopped): {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("\ninterrupted; servers stopped, nothing written", file=sys.stderr)
            return 130
        result = summarize(runs, args.servers, self.metrics, variants=variants,
                           variant_key=self.variant_key)
        extra_lines = conclude(result) if conclude else []
        print("\n".join([report(result, self.metrics, variants), *extra_lines]))
        if path is None:
            return 0
        record = {
            "benchmark": self.kind,
            "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "settings": {**self.settings(args), "servers": args.servers, "order": ORDER,
                         **(settings or {})},
            "commands": dict(commands or {}),
            "loadavg_1_5_15": {"before": load_before, "after": loadavg()},
            "machine": machine_info(self.packages, self.tools),
            **(extra or {}),
            **result,
            "runs": runs,
        }
        write_json(path, record)
        print(f"\nresults written to {path}")
        return 0

