"""The reload engine: save → serve against project size and on real framework projects, and what
many saves leave behind, for ``devserve --reload`` (default: one thread worker),
``devserve --reload --worker-mode process`` and ``uvicorn --reload``, in one run.

Cases (``--cases``), each server in a fresh copy of the project: ``gen-N`` (``--sizes``), a
generated package of N modules in a binary import tree whose deepest module imports ``leaf.py``,
served by a plain ASGI app answering ``leaf.VALUE`` (the edit); ``django-view|template|model``,
``fastapi-router|model``, ``flask-blueprint|template``: the test suite's projects
(``tests/projects``; Flask is WSGI, so devserve only); ``hello`` (``examples/hello.py``);
``fastapi-saves``: the FastAPI router saved ``--saves`` times, with RSS, fds and threads of the
process started and of its process tree every 10 saves, once devserve reports the reload done.

An edit rewrites the file in place with a new marker (each longer than the last, so a ``.pyc`` of
an earlier edit within the same second cannot pass for it); one keep-alive client polls every
3 ms until the marker is served: write → that response is the sample. One warm-up edit (repeated
until served: the watcher is live), then ``--edits`` measured ones ``--gap`` apart. Every poll
without a complete ``200`` is a failed request. Bounded: ``--deadline`` per edit, two edits in a
row not served end a run, ``--run-limit`` caps it. See benchmarks/README.md.

    python benchmarks/bench_reload_engine.py --quick    # gen-10 and every project, 2 edits
    python benchmarks/bench_reload_engine.py            # 7 edits, 150 saves, ~20 min
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    LOCALHOST,
    Benchmark,
    Metric,
    RunningServer,
    ServerError,
    ServerSpec,
    counts,
    format_table,
    median,
    pick,
    tree_state,
    tree_usage,
)
from _load import Http1Client, new_errors, percentile
from _reload_projects import HELLO, PROJECT_CASES, Case, generated_case

POLL_S = 0.003
SERVERS = ("devserve", "devserve-process", "uvicorn")
SAMPLED = ("rss_mib", "fds", "threads", "tree_rss_mib", "tree_fds", "tree_threads",
           "tree_processes", "tree_zombies")  # tree_usage() of the server, first and last
MEMORY_KEYS = (*(f"{k}_{at}" for k in SAMPLED for at in ("start", "end")),
               "rss_mib_per_100_saves", "tree_rss_mib_per_100_saves")


def _merged(values: list[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for value in values:
        total.update(value)
    return dict(total)


def _total(values: list[int]) -> int | None:
    return sum(values) if values else None


def _of(part: str, key: str) -> Callable[[dict[str, Any]], list[Any]]:
    """A figure of a run (``part``: edits or memory), or nothing for a skipped or failed run."""
    return lambda run: [] if run.get(part, {}).get(key) is None else [run[part][key]]


BENCH = Benchmark(
    kind="reload-engine",
    title="reload engine",
    description="Save-to-serve against project size and on Django/FastAPI/Flask projects, and "
                "RSS/fds over many saves: devserve --reload (thread, process) vs uvicorn --reload.",
    servers=SERVERS,
    full={"rounds": 1, "edits": 7, "saves": 150},
    quick={"edits": 2, "saves": 10},
    metrics=(
        Metric("p50_ms_median", _of("edits", "p50_ms"), label="p50 ms", fmt="{:.0f}",
               better="lower"),
        Metric("p90_ms_median", _of("edits", "p90_ms"), label="p90 ms", fmt="{:.0f}"),
        Metric("max_ms", _of("edits", "max_ms"), fold=lambda v: max(v, default=None),
               label="max ms", fmt="{:.0f}"),
        *(Metric(key, _of("edits", key), fold=_total, label=key, fmt="{}")
          for key in ("served", "missed", "requests", "failed")),
        Metric("failures", _of("edits", "errors"), fold=_merged, label="failures"),
        *(Metric(key, _of("memory", key)) for key in MEMORY_KEYS),
    ),
    packages=("devserve", "uvicorn", "watchfiles", "uvloop", "h11", "django", "fastapi",
              "sqlalchemy", "pydantic", "flask", "jinja2"),
    variant_key="case",
    start_timeout=60.0,
)


def server_spec(server: str, case: Case, project: Path, port: int) -> ServerSpec:
    common = [case.app, "--reload", "--app-dir", str(project), "--host", LOCALHOST,
              "--port", str(port), "--no-access-log"]
    if server.startswith("devserve"):
        argv = [sys.executable, "-m", "devserve", *common, "--tui", "off"]
        argv += ["--worker-mode", "process"] if server == "devserve-process" else []
    else:
        argv = [sys.executable, "-m", "uvicorn", *common, "--reload-dir", str(project)]
        argv += ["--reload-include", "*.html"] if case.templates else []
    return ServerSpec(server, argv, f"http://{LOCALHOST}:{port}{case.path}", cwd=project)


# --------------------------------------------------------------------------- measuring


class Editor:
    """Rewrites one file with a fresh, ever longer marker per edit."""

    def __init__(self, path: Path, token: str, marker: str) -> None:
        self.path, self.token, self.marker = path, token, marker
        self.source = path.read_text()
        if self.source.count(token) != 1:
            raise ServerError(f"{path}: {token!r} must occur exactly once")
        self.count = 0

    def edit(self) -> bytes:
        self.count += 1
        new = f"ed{self.count}z{'x' * self.count}"
        self.path.write_text(self.source.replace(self.token, self.token.replace(self.marker, new)))
        return new.encode()


class Poller:
    """One keep-alive client polling a path; counts every request and every failed one."""

    def __init__(self, port: int, path: str) -> None:
        self.errors = new_errors()
        self.client = Http1Client(LOCALHOST, port, path, timeout=10.0, errors=self.errors)
        self.requests = 0

    async def until(self, needle: bytes, deadline_s: float) -> float | None:
        """Seconds until a 200 whose body holds ``needle``, or None after ``deadline_s``."""
        start = time.perf_counter()
        while time.perf_counter() - start < deadline_s:
            self.requests += 1
            answer = await self.client.get()
            if answer is not None:
                if answer[0] != 200:
                    self.errors["status"] += 1
                elif needle in answer[1]:
                    return time.perf_counter() - start
            await asyncio.sleep(POLL_S)
        return None


RELOAD_LINES = (  # devserve's log line for each batch it finished: kind, server-side ms
    re.compile(r"Reloaded: generation \d+ ready in (?P<ms>\d+) ms \((?P<kind>[^,)]+)"),
    re.compile(r"Refreshed without a new generation \((?P<kind>[^,)]+)[^)]*\) in (?P<ms>\d+) ms"),
    re.compile(r"(?P<kind>Restarted): generation \d+ in (?P<ms>\d+) ms"),
    re.compile(r"Restarting in a (?P<kind>fresh process)"),  # thread mode re-executes devserve
    re.compile(r"Reload (?P<kind>failed)"),
)


def reload_kinds(log: str) -> dict[str, dict[str, Any]]:
    """How devserve served each batch, from its log (partial, wider, full, process, template-only,
    fresh process, failed...): how often, and the median ms it reported for the new generation
    (ready) or the refresh. The rest of save → serve is the watcher and the quiet period."""
    found: dict[str, list[float | None]] = {}
    for pattern in RELOAD_LINES:
        for match in pattern.finditer(log):
            ms = match.groupdict().get("ms")
            found.setdefault(match["kind"].lower(), []).append(float(ms) if ms else None)
    return {kind: {"count": len(all_ms),
                   "median_ms": median(ms) if (ms := [m for m in all_ms if m is not None])
                   else None} for kind, all_ms in found.items()}


async def settled(server: RunningServer, deadline_s: float = 10.0) -> float | None:
    """Seconds until devserve's log shows every batch it started as finished (``Reloaded`` comes
    once the previous generation drained), so a memory sample sees no generation still
    draining; None after the deadline. uvicorn stops its old child before it starts the next."""
    start = time.perf_counter()
    while server.spec.name.startswith("devserve"):
        log = server.log_path.read_text(errors="replace")
        done = sum(r["count"] for r in reload_kinds(log).values())
        if done >= log.count("Change detected in "):
            break
        if time.perf_counter() - start > deadline_s:
            return None
        await asyncio.sleep(0.02)
    return round(time.perf_counter() - start, 3)


async def memory_sample(server: RunningServer, save: int) -> dict[str, Any]:
    waited = await settled(server)
    return {"save": save, "settled_s": waited, **tree_usage(server.process.pid)}


def memory_figures(samples: list[dict[str, Any]]) -> dict[str, Any]:
    first, last = samples[0], samples[-1]
    saves = last["save"] - first["save"]
    figures: dict[str, Any] = {"saves": saves}
    for key in SAMPLED:
        figures |= {f"{key}_start": first[key], f"{key}_end": last[key]}
    for key in ("rss_mib", "tree_rss_mib"):
        figures[f"{key}_per_100_saves"] = (round((last[key] - first[key]) / saves * 100, 2)
                                           if saves else None)
    return {**figures, "samples": samples}


async def drive(server: RunningServer, case: Case, editor: Editor,
                args: argparse.Namespace) -> dict[str, Any]:
    poller = Poller(server.spec.port, case.path)
    began = time.perf_counter()
    wait = 1.0
    while await poller.until(editor.edit(), wait) is None:  # warm-up: until an edit is served
        if time.perf_counter() - began > args.deadline:
            raise ServerError(f"no edit was served within {args.deadline:.0f}s")
        wait = min(wait * 2, args.deadline)
    warm_up_ms = (time.perf_counter() - began) * 1000
    total = args.saves if case.saves else args.edits
    memory = [await memory_sample(server, 0)] if case.saves else []
    samples: list[float] = []
    missed = in_a_row = 0
    stopped = None
    for n in range(1, total + 1):
        if time.perf_counter() - began > args.run_limit:
            stopped = f"run limit {args.run_limit:.0f}s reached after {n - 1} edits"
            break
        await asyncio.sleep(args.gap)
        elapsed = await poller.until(editor.edit(), args.deadline)
        if elapsed is not None:
            samples.append(elapsed * 1000)
            in_a_row = 0
        else:
            missed, in_a_row = missed + 1, in_a_row + 1
            if in_a_row == 2:
                stopped = f"two edits in a row not served within {args.deadline:.0f}s"
                break
        if case.saves and (n % 10 == 0 or n == total):
            memory.append(await memory_sample(server, n))
    poller.client.close()
    await settled(server)  # devserve logs a reload once the previous generation drained
    ordered = sorted(samples)
    result: dict[str, Any] = {"warm_up_ms": round(warm_up_ms, 1), "edits": {
        "samples_ms": [round(s, 1) for s in samples],
        "p50_ms": round(percentile(ordered, 50), 1) if ordered else None,
        "p90_ms": round(percentile(ordered, 90), 1) if ordered else None,
        "max_ms": round(ordered[-1], 1) if ordered else None,
        "served": len(samples), "missed": missed, "stopped": stopped,
        "requests": poller.requests, "failed": sum(poller.errors.values()),
        "errors": poller.errors}}
    if memory:
        result["memory"] = memory_figures(memory)
    return result


def run_one(server: str, case: Case, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if case.wsgi and not server.startswith("devserve"):
        return {"skipped": "uvicorn serves ASGI only (Flask is WSGI)"}
    if case.saves and server not in args.saves_servers:
        return {"skipped": "not in --saves-servers"}
    project = Path(tempfile.mkdtemp(prefix=f"{server}-{case.name}-", dir=workdir))
    case.write(project)
    editor = Editor(project / case.file, case.token, case.marker)
    log: list[str] = []

    def measure(running: RunningServer) -> dict[str, Any]:
        try:
            return asyncio.run(drive(running, case, editor, args))
        finally:
            log.append(running.log_path.read_text(errors="replace"))

    try:
        result = BENCH.serve(args, lambda port: server_spec(server, case, project, port),
                             measure, log_dir=workdir)
    except ServerError as exc:  # recorded, and the other runs go on
        return {"error": str(exc).splitlines()[0], "log_tail": "".join(log)[-2000:]}
    if server.startswith("devserve"):
        result["reloads"] = reload_kinds("".join(log))
    return result


def line(run: dict[str, Any]) -> str:
    if "skipped" in run or "error" in run:
        return f"skipped: {run['skipped']}" if "skipped" in run else f"FAILED: {run['error']}"
    e = run["edits"]
    text = (f"p50 {e['p50_ms']} ms, p90 {e['p90_ms']} ms, max {e['max_ms']} ms; served "
            f"{e['served']}, missed {e['missed']}; failed {e['failed']} of {e['requests']}"
            f" ({counts(e['errors'])})")
    if run.get("reloads"):
        text += "; reloads " + ", ".join(
            f"{kind} x{r['count']}" + ("" if r["median_ms"] is None
                                       else f" (server {r['median_ms']:.0f} ms)")
            for kind, r in run["reloads"].items())
    if "memory" in run:
        m = run["memory"]
        text += (f"; RSS {m['rss_mib_start']:.0f} -> {m['rss_mib_end']:.0f} MiB, tree "
                 f"{m['tree_rss_mib_start']:.0f} -> {m['tree_rss_mib_end']:.0f} MiB, fds "
                 f"{m['fds_start']} -> {m['fds_end']}")
    return text + (f"  [{e['stopped']}]" if e["stopped"] else "")


# --------------------------------------------------------------------------- report


def _goals(figures: dict[str, Any], cases: list[str], server: str) -> list[str]:
    """The issue's goals for one devserve mode."""
    p50 = {c: figures[c][server]["p50_ms_median"] for c in cases}
    peer = {c: figures[c].get("uvicorn", {}).get("p50_ms_median") for c in cases}

    def times(case: str, goal: str) -> str:
        return f", uvicorn/devserve {peer[case] / p50[case]:.1f}x (goal {goal})" if peer[case] \
            else ""

    out = []
    sizes = [c for c in cases if c.startswith("gen-") and p50[c]]
    if sizes:
        c = max(sizes, key=lambda name: int(name[4:]))
        out.append(f"{c} leaf edit p50 {p50[c]:.0f} ms (goal <= 150 ms at 1,500)"
                   + times(c, ">= 10x"))
    framework = {c: p50[c] for c in cases if c.split("-")[0] in ("django", "fastapi", "flask")
                 and c != "fastapi-saves" and p50[c]}
    if framework:
        worst = max(framework, key=lambda c: framework[c])
        out.append(f"framework projects p50 {min(framework.values()):.0f}-{framework[worst]:.0f}"
                   f" ms (worst {worst}), median of the cases "
                   f"{median(list(framework.values())):.0f} ms (goal <= 100 ms)")
    if p50.get("hello"):
        out.append(f"hello p50 {p50['hello']:.0f} ms (goal <= 35 ms)" + times("hello", ">= 12x"))
    failed = sum(figures[c][server]["failed"] or 0 for c in cases)
    return [f"  {server}: {text}" for text in [*out, f"failed requests: {failed} (goal 0)"]]


def conclude(cases: list[str], tree: dict[str, Any]) -> Callable[[dict[str, Any]], list[str]]:
    """Speed-ups as the issue states them (uvicorn p50 / devserve p50), the goals, RSS and fds;
    ``tree`` (the record's extra) gets the devserve/ tree at the end next to the one at start."""
    def lines(result: dict[str, Any]) -> list[str]:
        figures = result["servers"]
        ours = [s for s in figures[cases[0]] if s.startswith("devserve")]
        tree["devserve_tree_at_end"] = tree_state("devserve")
        out = [] if tree["devserve_tree_at_end"] == tree["devserve_tree_at_start"] else [
            "", "WARNING: devserve/ changed during the run (commit or uncommitted files): the "
                "cases did not all measure the same code"]
        if "uvicorn" in figures[cases[0]]:
            rows = [[c, *(f"{f['uvicorn']['p50_ms_median'] / f[s]['p50_ms_median']:.1f}x"
                          if f["uvicorn"]["p50_ms_median"] and f[s]["p50_ms_median"] else "n/a"
                          for s in ours)] for c, f in ((c, figures[c]) for c in cases)]
            out += ["", "speed-up, uvicorn p50 / devserve p50 (higher is better):",
                    format_table(["case", *ours], rows)]
        out += ["", "goals:"]
        for server in ours:
            out += _goals(figures, cases, server)
        if "fastapi-saves" in cases:
            shown = ("rss_mib", "tree_rss_mib", "fds", "tree_fds", "threads", "tree_processes")
            rows = [[s, *(f"{f[k + '_start']:.0f} -> {f[k + '_end']:.0f}" for k in shown),
                     *(f"{f[k + '_per_100_saves']:+.1f}" for k in ("rss_mib", "tree_rss_mib")),
                     f"{f['tree_zombies_end']:.0f}"]
                    for s, f in figures["fastapi-saves"].items() if f["rss_mib_end"] is not None]
            out += ["", "over the saves, first -> last sample (tree: the process started and its"
                        " descendants; RSS in MiB, /100: per 100 saves):",
                    format_table(["server", "RSS", "tree RSS", "fds", "tree fds", "threads",
                                  "processes", "RSS/100", "tree/100", "zombies"], rows),
                    "  goal: RSS growth < 5 MiB per 100 reloads, fds and threads flat"]
        return out
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = BENCH.parser()
    parser.add_argument("--edits", type=int, help="measured edits per case (7; quick: 2)")
    parser.add_argument("--saves", type=int, help="saves in the RSS/fds case (150; quick: 10)")
    parser.add_argument("--sizes", help="generated project sizes (10,300,1500; quick: 10)")
    parser.add_argument("--cases", help="cases to run (default: all)")
    parser.add_argument("--saves-servers", default=",".join(SERVERS),
                        help="servers in the RSS/fds case (default: all three)")
    parser.add_argument("--gap", type=float, default=0.2, help="pause before each edit (0.2 s)")
    parser.add_argument("--deadline", type=float, default=30.0,
                        help="seconds an edit may take to be served (30)")
    parser.add_argument("--run-limit", type=float, default=600.0,
                        help="seconds one server may spend on one case (600)")
    args = BENCH.parse(parser, argv)
    sizes = [int(s) for s in (args.sizes or ("10" if args.quick else "10,300,1500")).split(",")]
    if min(sizes) < 2 or min(args.edits, args.saves) < 1:
        parser.error("--sizes must be >= 2, --edits and --saves >= 1")
    every = {**{f"gen-{n}": generated_case(n) for n in sizes},
             **{c.name: c for c in PROJECT_CASES.values() if not c.saves}, "hello": HELLO,
             "fastapi-saves": PROJECT_CASES["fastapi-saves"]}
    cases = pick(parser, "--cases", args.cases or ",".join(every), list(every))
    args.saves_servers = pick(parser, "--saves-servers", args.saves_servers, SERVERS)
    tree = {"devserve_tree_at_start": tree_state("devserve")}
    with tempfile.TemporaryDirectory(prefix="bench-reload-engine-") as tmp:
        return BENCH.run(
            args, lambda server, case: run_one(server, every[case or cases[0]], args, Path(tmp)),
            line=line, variants=cases, conclude=conclude(cases, tree),
            header=f"{args.edits} edits per case, {args.saves} saves, sizes "
                   f"{','.join(map(str, sizes))}",
            notes=["Flask (WSGI) runs under devserve only: uvicorn serves ASGI",
                   "uvicorn gets --reload-include '*.html' on the framework projects"],
            settings={"edits": args.edits, "warm_up_edits": 1, "saves": args.saves,
                      "saves_servers": args.saves_servers, "sizes": sizes,
                      "gap_s": args.gap, "poll_interval_ms": POLL_S * 1000,
                      "client": "one keep-alive HTTP/1.1 connection, one request in flight",
                      "edit_deadline_s": args.deadline, "run_limit_s": args.run_limit,
                      "memory_sample_every_saves": 10, "percentiles": "nearest rank",
                      "edits_by_case": {c: f"{every[c].file}: {every[c].token!r} -> GET "
                                           f"{every[c].path}" for c in cases}},
            commands={c: {s: server_spec(s, every[c], Path("DIR"), 0).template()
                          for s in args.servers if s.startswith("devserve") or not every[c].wsgi}
                      for c in cases},
            extra=tree,  # the record is written after conclude() added the tree at the end
        )


if __name__ == "__main__":
    sys.exit(main())
