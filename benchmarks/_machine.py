"""Where the numbers came from: the machine, the versions and the commit a result was measured
on, and how busy the machine was. A ratio means little without them.

Stdlib only; imports nothing from the other benchmark modules.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def package_versions(names: Sequence[str]) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def tool_version(argv: Sequence[str]) -> str | None:
    """First output line of ``argv`` (e.g. ``wrk -v``, which exits 1 but prints its version)."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _git_commit() -> str | None:
    """The commit benchmarked (read-only ``git rev-parse``); None outside a checkout."""
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def tree_state(path: str = "devserve") -> dict[str, Any]:
    """The commit and the files under *path* that differ from it (read-only ``git status``):
    with others' edits in the working tree, the commit alone does not say what was measured,
    and a tree that changed between the start and the end of a run mixed two versions."""
    try:
        proc = subprocess.run(["git", "status", "--porcelain", "--", path], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": _git_commit(), "uncommitted": None}
    changed = [line[3:] for line in proc.stdout.splitlines()] if proc.returncode == 0 else None
    return {"git_commit": _git_commit(), "uncommitted": changed}


def machine_info(
    packages: Sequence[str] = (), tools: Mapping[str, Sequence[str]] | None = None
) -> dict[str, Any]:
    """CPU, platform, Python, the versions of ``packages`` and ``tools``, the git commit."""
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": len(affinity) if affinity is not None else os.cpu_count(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(packages),
        "tools": {name: tool_version(argv) for name, argv in (tools or {}).items()},
        "git_commit": _git_commit(),
    }


def loadavg() -> list[float] | None:
    """1/5/15-minute load average: other jobs on the box skew every figure, so say how busy."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def host_label() -> str:
    """Hostname safe for a filename, or ``local`` when there is none."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", socket.gethostname()).strip("-.")
    return name or "local"
