"""The projects ``bench_reload_engine.py`` edits: a generated package of N modules, the test
suite's Django/FastAPI/Flask projects and the hello example, each with the file an edit rewrites
and the URL path whose body shows it."""

from __future__ import annotations

import importlib
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _common import EXAMPLES, REPO_ROOT

GEN_MODULE = '''"""Generated module {i}."""
import dataclasses
{imports}

@dataclasses.dataclass
class Thing{i}:
    a: int = {i}
    b: str = "m{i}"

    def total(self) -> int:
        return self.a + len(self.b)


TABLE = {{f"k{{j}}": j * {i} for j in range(20)}}


def helper_{i}(x: int) -> int:
    return x + {i} + sum(TABLE.values())


DEPS = ({deps})
'''
GEN_APP = '''"""Answers leaf.VALUE; importing m0000 imports the whole tree."""
from genproj import leaf, m0000  # noqa: F401


async def app(scope, receive, send):
    while scope["type"] == "lifespan":
        kind = (await receive())["type"].replace("lifespan.", "")
        await send({"type": f"lifespan.{kind}.complete"})
        if kind == "shutdown":
            return
    body = leaf.VALUE.encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
'''


def write_generated(root: Path, size: int) -> None:
    """``genproj``: ``size`` modules, ``size - 1`` in a binary import tree (module *i* imports
    2i+1 and 2i+2; the last one imports ``leaf``), plus ``leaf``; ``app`` imports both."""
    pkg = root / "genproj"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    tree = max(1, size - 1)
    for i in range(tree):
        kids = [f"m{k:04d}" for k in (2 * i + 1, 2 * i + 2) if k < tree]
        kids += ["leaf"] if i == tree - 1 else []
        (pkg / f"m{i:04d}.py").write_text(GEN_MODULE.format(
            i=i, imports="".join(f"from genproj import {k}\n" for k in kids),
            deps="".join(f"{k}.__name__, " for k in kids)))
    (pkg / "leaf.py").write_text('VALUE = "leaf-v1"\n')
    (pkg / "app.py").write_text(GEN_APP)


def tests_project(module: str, builder: str) -> Callable[[Path], None]:
    """A builder from tests/projects, imported when first used (the repo root goes on the path)."""
    def write(root: Path) -> None:
        if str(REPO_ROOT) not in sys.path:
            sys.path.append(str(REPO_ROOT))
        getattr(importlib.import_module(f"tests.projects.{module}"), builder)(root)
    return write


def copy_hello(root: Path) -> None:
    shutil.copy(EXAMPLES / "hello.py", root / "hello.py")


@dataclass(frozen=True)
class Case:
    """A project, its app, the file an edit rewrites (``token`` → ``token`` with ``marker``
    replaced) and the URL path whose body shows it."""

    name: str
    write: Callable[[Path], None]
    app: str
    file: str
    token: str
    path: str = "/"
    marker: str = "v1"
    wsgi: bool = False  # uvicorn serves ASGI only
    templates: bool = False  # uvicorn watches *.py only: give it --reload-include '*.html'
    saves: bool = False  # the RSS/fds case: --saves edits


DJANGO = ("django", tests_project("django_project", "make_django_project"),
          "mysite.asgi:application")
FASTAPI = ("fastapi", tests_project("fastapi_project", "make_fastapi_project"), "shop.main:app")
FLASK = ("flask", tests_project("flask_project", "make_flask_project"), "site_app.app:app")
PROJECT_CASES = {f"{p[0]}-{kind}": Case(f"{p[0]}-{kind}", *p[1:], file, token, path,
                                        wsgi=p is FLASK, templates=p is not FLASK,
                                        saves=kind == "saves")
                 for p, kind, file, token, path in (
    (DJANGO, "view", "polls/views.py", "view-v1", "/"),
    (DJANGO, "template", "polls/templates/polls/page.html", "template-v1", "/page"),
    (DJANGO, "model", "polls/models.py", "model-v1", "/model"),
    (FASTAPI, "router", "shop/routers/items.py", "route-v1", "/route"),
    (FASTAPI, "model", "shop/models.py", "model-v1", "/items"),
    (FLASK, "blueprint", "site_app/blog.py", "blog-v1", "/"),
    (FLASK, "template", "site_app/templates/page.html", "template-v1", "/page"),
    (FASTAPI, "saves", "shop/routers/items.py", "route-v1", "/route"),
)}
HELLO = Case("hello", copy_hello, "hello:app", "hello.py", 'HELLO = b"Hello, world!"',
             marker="world")


def generated_case(size: int) -> Case:
    return Case(f"gen-{size}", lambda root: write_generated(root, size), "genproj.app:app",
                "genproj/leaf.py", "leaf-v1")
