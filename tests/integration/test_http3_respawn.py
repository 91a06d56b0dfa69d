"""A killed HTTP/3 worker process is respawned under the crash budget, like a TCP slot."""

from __future__ import annotations

import json
import os
import signal

import httpx
from apps import h3_client
from conftest import ServerFactory, wait_until


def test_killed_h3_worker_is_respawned(start_server: ServerFactory) -> None:
    server = start_server("h3_app:app", "--https", "--http3", "--no-access-log",
                          "--worker-mode", "process")
    server.wait_for(r"\(HTTP/3 over UDP\)")
    first = json.loads(h3_client.get(server.host, server.port, "/scope").text)
    h3_pid = first["pid"]
    assert h3_pid != server.proc.pid
    start = len(server.lines)
    os.kill(h3_pid, signal.SIGKILL)
    server.wait_for(r"Worker \d+ \(h3-0 .*\) died: .*respawning in", start=start, timeout=10)

    def served_by_a_new_worker() -> bool:
        try:
            again = json.loads(h3_client.get(server.host, server.port, "/scope",
                                             timeout=2).text)
        except Exception:  # the respawned worker may not listen yet: any failure means "not yet"
            return False
        return bool(again["pid"] != h3_pid)

    wait_until(served_by_a_new_worker, 15, "HTTP/3 served by a new worker after the kill",
               interval=0.05, detail=lambda: server.output)
    # TCP kept serving throughout, and the server is still up.
    assert httpx.get(server.url + "/", verify=False, timeout=5).status_code == 200
    assert server.proc.poll() is None
