"""H3Worker's lifecycle on a real UDP socket: its stats timer is one handle, rescheduled on each
tick and cancelled when serving ends (it once kept ticking through the lifespan shutdown because
the rescheduled handle was dropped and only the first one was cancelled)."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

from devserve.config import Config
from devserve.lifecycle import RecordingCollector, WorkerStats
from devserve.net.tls import ensure_dev_certificate
from devserve.serve.h3 import AppRef
from devserve.workers.h3_worker import H3Worker

TICK = 0.05


class EveryTickH3(H3Worker):
    """Reports a new reading on every tick, so each tick shows up as a WorkerStats event."""

    TICK = TICK

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.readings = 0

    def _gauges(self) -> tuple[int, int, int]:
        self.readings += 1
        return 0, 0, self.readings


def test_the_stats_timer_stops_when_serving_ends(tmp_path: Path) -> None:
    collector = RecordingCollector()
    counts: dict[str, int] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                counts["at shutdown"] = len(collector.of_type(WorkerStats))
                await asyncio.sleep(5 * TICK)  # a slow app shutdown: five ticks' worth
                counts["after"] = len(collector.of_type(WorkerStats))
                await send({"type": "lifespan.shutdown.complete"})
                return

    dev = ensure_dev_certificate(tmp_path)
    config = Config(loop="asyncio", lifespan="on", http3=True, ssl_certfile=str(dev.cert_path),
                    ssl_keyfile=str(dev.key_path))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        worker = EveryTickH3(config, AppRef(app, 1), sock, collector=collector,
                             run_lifespan=True)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        assert worker.ready.wait(10) and worker.startup_error is None
        collector.wait_for(WorkerStats, 3)  # the timer was rescheduled at least twice
        worker.shutdown()
        thread.join(10)
        assert not thread.is_alive()
    assert counts["at shutdown"] >= 3
    assert counts["after"] == counts["at shutdown"], "the stats timer outlived the worker"
