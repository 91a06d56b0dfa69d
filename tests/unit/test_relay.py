"""The relay a server becomes after handing over (``devserve.supervision.relay``), with real
processes: it exits with the current server's status, passes on signals sent to it, and adopts
the successor a server announces before exiting (one relay however many hand-overs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the relay is Linux-only")

# A "server": says who it is, then exits with 7 on SIGTERM (or as its argv says).
SERVER = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    from devserve.supervision import relay
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(int(os.environ["CODE"])))
    if os.environ.get("HAND_OVER"):  # hand over to a successor (exit 5 on SIGTERM), then exit
        successor = subprocess.Popen(
            [sys.executable, "-c", os.environ["SERVER"]],
            env={**os.environ, "HAND_OVER": "", "CODE": "5", "NAME": "successor"})
        relay.announce(int(os.environ["RELAY_FD"]), successor.pid)
        os._exit(0)
    print(os.environ["NAME"], os.getpid(), flush=True)
    if os.environ.get("SELF_KILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(20)
""")

# What the test starts: a process that starts the server, then becomes its relay.
STARTER = textwrap.dedent("""
    import os, subprocess, sys
    from devserve.supervision import relay
    read_fd, write_fd = relay.pipe()
    server = subprocess.Popen([sys.executable, "-c", os.environ["SERVER"]], pass_fds=(write_fd,),
                              env={**os.environ, "RELAY_FD": str(write_fd)})
    os.close(write_fd)
    relay.become_relay(server.pid, read_fd)
""")


def start(**env: str) -> subprocess.Popen[str]:
    full = {"SERVER": SERVER, "CODE": "7", "NAME": "server", **env}
    return subprocess.Popen([sys.executable, "-c", STARTER], env={**os.environ, **full},
                            stdout=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()  # the relay; a server still running ends by itself within 20 s
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def test_signals_sent_to_the_relay_reach_the_server_and_its_status_comes_back() -> None:
    proc = start()
    try:
        assert first_line(proc).startswith("server ")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 7
    finally:
        stop(proc)


def test_a_server_killed_by_a_signal_is_reported_as_a_shell_would() -> None:
    proc = start(SELF_KILL="1")
    try:
        assert first_line(proc).startswith("server ")
        assert proc.wait(10) == 128 + signal.SIGKILL
    finally:
        stop(proc)


def test_the_announced_successor_is_adopted_and_relayed() -> None:
    proc = start(HAND_OVER="1")
    try:
        name, pid = first_line(proc).split()
        assert name == "successor"
        # The relay is its subreaper (no chain of relays) once the server that handed over
        # has exited.
        wait_until(lambda: _parent(int(pid)) == proc.pid, 5.0, "the successor adopted")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 5
    finally:
        stop(proc)
