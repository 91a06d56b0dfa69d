"""Nothing is retained across reloads: after many saves the server's memory, open file
descriptors and threads stay flat — each drained generation (its modules, app, event loop and
resources) is released, not kept by handles, hand-over callbacks, events or frozen GC state."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from tests.conftest import ServerFactory, ServerProcess

SAVES = 150
WARMUP = 20
APP = '''
BIG = [str(i) for i in range(100_000)]  # ~6 MiB a generation: a retained one shows at once
VERSION = "v{n}"

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": VERSION.encode()}})
'''


def _usage(pid: int) -> tuple[float, int, int]:
    """(RSS in MiB, open fds, threads) of *pid*."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields["VmRSS"].split()[0]) / 1024
    threads = int(fields["Threads"])
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads


def _save(server: ServerProcess, source: Path, n: int, client: httpx.Client) -> int:
    """Edit, wait until the new text is served; returns the new generation's number."""
    start = len(server.lines)
    source.write_text(APP.format(n=n))
    generation = int(server.wait_for(r"Reloaded: generation (\d+)", 15, start=start)[1])
    assert client.get("/").text == f"v{n}"
    return generation


def _released(server: ServerProcess, generation: int) -> None:
    """Wait until every generation before *generation* was collected (at the first quiet
    moment, at most 2 s after the reload): memory is sampled with nothing pending."""
    server.wait_for(f"released the generations before {generation}:", 10)


def test_memory_fds_and_threads_stay_flat_over_many_reloads(tmp_path: Path,
                                                            start_server: ServerFactory) -> None:
    source = tmp_path / "big_app.py"
    source.write_text(APP.format(n=0))
    server = start_server("big_app:app", "--reload", "--reload-delay", "0.01",
                          "--log-level", "debug", cwd=tmp_path)
    server.wait_for(r"Watching for changes in \d+ director")
    pid = server.proc.pid
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        for n in range(1, WARMUP + 1):
            generation = _save(server, source, n, client)
        _released(server, generation)
        rss0, fds0, threads0 = _usage(pid)
        for n in range(WARMUP + 1, SAVES + 1):
            generation = _save(server, source, n, client)
        _released(server, generation)
        rss1, fds1, threads1 = _usage(pid)
    per_100 = (rss1 - rss0) * 100 / (SAVES - WARMUP)
    assert per_100 < 5.0, f"RSS {rss0:.1f} -> {rss1:.1f} MiB over {SAVES - WARMUP} reloads"
    assert fds1 <= fds0, f"open fds {fds0} -> {fds1}"
    assert threads1 <= threads0, f"threads {threads0} -> {threads1}"
