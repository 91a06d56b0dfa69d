"""Real framework projects written into a temp dir for reload tests: Django (models, admin,
templates, a lazily imported views module), FastAPI (SQLAlchemy models, pydantic schemas, routers in
several modules, Jinja2 templates), Flask (blueprints, templates), and a generated N-module project.

Each builder returns the project root; tests edit real files in it and assert what is *served*."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import ServerProcess, wait_until

WATCHING_RE = r"Watching for changes in \d+ director"
DEADLINE = 15.0  # generous: this only catches a reload that never serves the edit


def write_files(root: Path, files: dict[str, str]) -> Path:
    """Write *files* (relative path → text, leading newline dropped) under *root*."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip("\n"))
    return root


def served(server: ServerProcess, path: str, expected: str, deadline: float = DEADLINE) -> str:
    """Poll *path* until its body contains *expected*; fail with the server's output."""
    def body() -> str:
        try:
            response = httpx.get(server.url + path, timeout=5.0)
        except httpx.TransportError:
            return ""
        return response.text if expected in response.text else ""

    return wait_until(body, deadline, f"{expected!r} served at {path}",
                      detail=lambda: server.output)


def edit(path: Path, old: str, new: str) -> None:
    """Replace *old* by *new* in *path* (which must contain it), as an editor's save would."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))
