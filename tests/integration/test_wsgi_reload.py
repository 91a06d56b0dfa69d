"""Zero-downtime reloads of a WSGI app on SyncWorkers, under a bounded load of 20 keep-alive
clients: SIGHUP and a ``--reload`` file edit, in thread mode (one AcceptDistributor shared by
the generations) and process mode (one per process). No request may fail, and every request
sent after "Reloaded" is logged must be answered by the new code."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
from apps.sup_load import KeepAliveLoad, Outcome
from conftest import APPS, ServerFactory, ServerProcess

TEMPLATE = (APPS / "wsgi_reload_app.py").read_text()
MODULE = "wsgi_reload_target"
RELOADED_RE = r"Reloaded: generation (\d+) ready"
GEN_RE = re.compile(r"devserve-g(\d+)-w(\d+)")


def write_app(directory: Path, version: str) -> None:
    (directory / f"{MODULE}.py").write_text(
        TEMPLATE.replace('VERSION = "v1"', f"VERSION = {version!r}"))


def start(start_server: ServerFactory, directory: Path, mode: str, *extra: str
          ) -> ServerProcess:
    write_app(directory, "v1")
    return start_server(f"{MODULE}:app", "--app-dir", str(directory), "--workers", "2",
                        "--worker-mode", mode, "--threads", "4", "--no-access-log", *extra,
                        cwd=directory)


def generation_of(outcome: Outcome) -> int:
    m = GEN_RE.search(outcome.worker)
    assert m, outcome
    return int(m.group(1))


def check_reload(server: ServerProcess, load: KeepAliveLoad, gen: int, version: str,
                 trigger: object) -> None:
    """Run *trigger* (signal or edit), wait for "Reloaded", then for new-code answers only."""
    index = len(server.lines)
    trigger()  # type: ignore[operator]
    match = server.wait_for(RELOADED_RE, timeout=30, start=index)
    assert int(match.group(1)) == gen, server.output
    seen = time.monotonic()
    fresh = load.wait_for(lambda o: o.ok and o.started > seen and o.version == version, 40,
                          what=f"{version} responses")
    stale = [o for o in load.snapshot() if o.ok and o.started > seen and o.version != version]
    assert not stale, f"old code answered after the reload: {stale[:3]}"
    assert {generation_of(o) for o in fresh} == {gen}


def assert_no_failures(load: KeepAliveLoad) -> None:
    outcomes = load.snapshot()
    failures = [o for o in outcomes if not o.ok]
    assert not failures, (f"{len(failures)} of {len(outcomes)} failed: "
                          + "; ".join(f"{o.status} {o.error}" for o in failures[:5]))
    assert len(outcomes) > 100


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_sighup_reload_under_load(start_server: ServerFactory, tmp_path: Path,
                                  mode: str) -> None:
    server = start(start_server, tmp_path, mode)
    with KeepAliveLoad(server.url, clients=20, max_seconds=90) as load:
        load.wait_for(lambda o: o.ok and o.version == "v1", 40, what="v1 responses")
        for gen in (2, 3):
            version = f"v{gen}-" + "x" * gen
            write_app(tmp_path, version)
            check_reload(server, load, gen, version,
                         lambda: server.send_signal(signal.SIGHUP))
    assert_no_failures(load)


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_file_edit_reload_under_load(start_server: ServerFactory, tmp_path: Path,
                                     mode: str) -> None:
    server = start(start_server, tmp_path, mode, "--reload")
    with KeepAliveLoad(server.url, clients=20, max_seconds=90) as load:
        load.wait_for(lambda o: o.ok and o.version == "v1", 40, what="v1 responses")
        check_reload(server, load, 2, "v2-edited",
                     lambda: write_app(tmp_path, "v2-edited"))
    assert_no_failures(load)
