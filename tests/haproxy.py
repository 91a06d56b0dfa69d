"""A real HAProxy in front of a few backends, for the rolling-restart test and the deploy
benchmark (so both measure the same balancer setup).

HAProxy retries a request whose connection failed or got an empty response (``retry-on
conn-failure empty-response``, with ``option redispatch``: on another server), but never one
that got an answer such as a 503. Health checks run every 100 ms and take a server out after one
failure: an HTTP check on *check_path* expecting 200, or a plain TCP connect.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path


def available() -> bool:
    return shutil.which("haproxy") is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config(front: int, backends: list[int], check_path: str | None) -> str:
    """HAProxy's configuration: *front* balanced round-robin over *backends* (127.0.0.1),
    HTTP checks on *check_path*, or TCP checks when it is None."""
    check = (f"    option httpchk GET {check_path}\n    http-check expect status 200\n"
             if check_path else "")
    servers = "".join(f"    server s{i} 127.0.0.1:{port} check inter 100ms fall 1 rise 1\n"
                      for i, port in enumerate(backends))
    return f"""global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 20s
    timeout server 20s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
frontend front
    bind 127.0.0.1:{front}
    default_backend app
backend app
    balance roundrobin
{check}{servers}"""


def connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class HAProxy:
    """``haproxy -db`` (foreground) on *config_file*; :meth:`stop` returns what it printed."""

    def __init__(self, config_file: Path) -> None:
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(config_file)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True)

    def stop(self) -> str:
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate(timeout=10)
        return out
