"""Partial re-import on real framework projects written to a temp dir: what is *served* after an
edit (through a real httpx client on the app), which modules re-executed, and that the previous
generation's app still serves its own code. FastAPI routers decorated in another module, Flask
blueprints, SQLAlchemy models on a Base from an unchanged module, a module-level registry, and a
generated 1,200-module project where a leaf edit re-executes only the leaf and its importers."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devserve.reload.importer import ProjectImporter


class Project:
    """Files of one test's project under a package name unique to the test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pkg = f"prl_{uuid.uuid4().hex[:10]}"
        self.importer: ProjectImporter | None = None

    def write(self, rel: str, source: str) -> Path:
        path = self.root / rel.replace("PKG", self.pkg)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).replace("PKG", self.pkg))
        return path

    def edit(self, rel: str, old: str, new: str) -> Path:
        path = self.root / rel.replace("PKG", self.pkg)
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))
        return path

    def load(self, target: str) -> Any:
        self.importer = ProjectImporter(target.replace("PKG", self.pkg), dirs=[self.root],
                                        app_dir=str(self.root))
        return self.importer.load().app

    def reload(self, *paths: Path) -> tuple[Any, str, list[str]]:
        """The new app, the strategy, and the re-executed modules (without the package prefix)."""
        assert self.importer is not None
        outcome = self.importer.reload(paths)
        names = [n.replace(f"{self.pkg}.", "").replace(self.pkg, "PKG")
                 for n in outcome.reexecuted]
        return outcome.loaded.app, outcome.strategy, names


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    path = list(sys.path)
    proj = Project(tmp_path.resolve())
    yield proj
    if proj.importer is not None:
        proj.importer.close()
    sys.path[:] = path
    for name in [n for n in sys.modules if n == proj.pkg or n.startswith(f"{proj.pkg}.")]:
        del sys.modules[name]


def asgi_get(app: Any, path: str = "/") -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    return asyncio.run(go())


def wsgi_get(app: Any, path: str = "/") -> httpx.Response:
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://test") as client:
        return client.get(path)


# --- FastAPI: a router defined in one module, decorated in another ------------------------------


def fastapi_project(project: Project) -> None:
    project.write("PKG/__init__.py", "")
    project.write("PKG/routing.py", """
        from fastapi import APIRouter
        router = APIRouter()
    """)
    project.write("PKG/views.py", """
        from PKG.routing import router

        @router.get("/")
        def index():
            return {"body": "views v1"}
    """)
    project.write("PKG/health.py", """
        def status():
            return "ok"
    """)
    project.write("PKG/main.py", """
        from fastapi import FastAPI
        from PKG import views  # noqa: F401  (registers the routes)
        from PKG.health import status
        from PKG.routing import router

        app = FastAPI()
        app.include_router(router)

        @app.get("/health")
        def health():
            return {"status": status()}
    """)


def test_fastapi_route_decorated_in_the_edited_module_serves_its_new_body(
        project: Project) -> None:
    fastapi_project(project)
    first = project.load("PKG.main:app")
    assert asgi_get(first).json() == {"body": "views v1"}

    app, strategy, names = project.reload(project.edit("PKG/views.py", "views v1", "views v2"))
    assert asgi_get(app).json() == {"body": "views v2"}
    # The router the edit decorates is rebuilt with it, or the old route would match first.
    assert strategy == "wider" and names == ["routing", "views", "main"]
    assert asgi_get(first).json() == {"body": "views v1"}  # previous generation untouched
    assert len(sys.modules[f"{project.pkg}.routing"].router.routes) == 1

    # The next edit of the same file goes wider straight away (no wasted attempt).
    app, strategy, names = project.reload(project.edit("PKG/views.py", "views v2", "views v3"))
    assert asgi_get(app).json() == {"body": "views v3"}
    assert strategy == "wider" and names == ["routing", "views", "main"]


def test_fastapi_editing_the_defining_module_re_executes_both(project: Project) -> None:
    fastapi_project(project)
    project.load("PKG.main:app")
    edited = project.edit("PKG/routing.py", "APIRouter()", "APIRouter(prefix='/v2')")
    app, strategy, names = project.reload(edited)
    assert strategy == "partial" and names == ["routing", "views", "main"]
    assert asgi_get(app, "/v2/").json() == {"body": "views v1"}
    assert asgi_get(app, "/").status_code == 404


def test_fastapi_unrelated_helper_edit_keeps_the_router_modules(project: Project) -> None:
    fastapi_project(project)
    project.load("PKG.main:app")
    views = sys.modules[f"{project.pkg}.views"]
    app, strategy, names = project.reload(project.edit("PKG/health.py", '"ok"', '"fine"'))
    assert strategy == "partial" and names == ["health", "main"]
    assert asgi_get(app, "/health").json() == {"status": "fine"}
    assert asgi_get(app).json() == {"body": "views v1"}
    assert sys.modules[f"{project.pkg}.views"] is views


# --- Flask: a blueprint decorated in another module ---------------------------------------------


def test_flask_blueprint_decorated_in_another_module(project: Project) -> None:
    project.write("PKG/__init__.py", """
        from flask import Flask
        from PKG.blueprint import bp
        from PKG import views  # noqa: F401  (decorates bp)

        app = Flask(__name__)
        app.register_blueprint(bp)
    """)
    project.write("PKG/blueprint.py", """
        from flask import Blueprint
        bp = Blueprint("main", __name__)
    """)
    project.write("PKG/views.py", """
        from PKG.blueprint import bp

        @bp.route("/")
        def index():
            return "blueprint v1"
    """)
    first = project.load("PKG:app")
    assert wsgi_get(first).text == "blueprint v1"
    # Flask refuses @bp.route on a blueprint already registered: the blueprint is rebuilt too.
    app, strategy, names = project.reload(project.edit("PKG/views.py", "v1", "v2"))
    assert wsgi_get(app).text == "blueprint v2"
    assert strategy == "wider" and set(names) == {"blueprint", "views", "PKG"}
    assert wsgi_get(first).text == "blueprint v1"
    app, strategy, names = project.reload(project.edit("PKG/views.py", "v2", "v3"))
    assert wsgi_get(app).text == "blueprint v3" and strategy == "wider"


# --- SQLAlchemy models on a Base from an unchanged module ---------------------------------------


def test_sqlalchemy_models_edit_rebuilds_the_base_not_a_duplicate_table(
        project: Project) -> None:
    project.write("PKG/__init__.py", "")
    project.write("PKG/db.py", """
        from sqlalchemy import create_engine
        from sqlalchemy.orm import DeclarativeBase, Session

        engine = create_engine("sqlite://")

        class Base(DeclarativeBase):
            pass

        def session():
            return Session(engine)
    """)
    project.write("PKG/models.py", """
        from sqlalchemy.orm import Mapped, mapped_column
        from PKG.db import Base

        class Item(Base):
            __tablename__ = "items"
            id: Mapped[int] = mapped_column(primary_key=True)
            name: Mapped[str]

            def label(self):
                return f"v1 {self.name}"
    """)
    project.write("PKG/main.py", """
        from PKG.db import Base, engine, session
        from PKG.models import Item

        Base.metadata.create_all(engine)
        with session() as s:
            s.add(Item(name="spoon"))
            s.commit()

        async def app(scope, receive, send):
            with session() as s:
                text = ", ".join(i.label() for i in s.query(Item).all())
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": text.encode()})
    """)
    first = project.load("PKG.main:app")
    old_base = sys.modules[f"{project.pkg}.db"].Base
    assert asgi_get(first).text == "v1 spoon"

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor a SAWarning about a class declared twice
        app, strategy, names = project.reload(project.edit("PKG/models.py", "v1", "v2"))
    assert asgi_get(app).text == "v2 spoon"
    assert strategy == "wider" and names == ["db", "models", "main"]
    assert sys.modules[f"{project.pkg}.db"].Base is not old_base
    assert list(old_base.metadata.tables) == ["items"]  # the old Base is left as it was
    assert asgi_get(first).text == "v1 spoon"  # and the previous generation still works


# --- a module-level registry in an unchanged module --------------------------------------------


def test_registry_in_an_unchanged_module_is_rebuilt(project: Project) -> None:
    """The edited module registers into a dict another module owns: that module re-executes too,
    so a handler removed from the edited module does not linger in the registry."""
    project.write("PKG/__init__.py", "")
    project.write("PKG/registry.py", "HANDLERS = {}\n")
    project.write("PKG/plugins.py", """
        from PKG.registry import HANDLERS

        def hello():
            return "hello v1"

        def bye():
            return "bye v1"

        HANDLERS["hello"] = hello
        HANDLERS["bye"] = bye
    """)
    project.write("PKG/main.py", """
        from PKG import plugins  # noqa: F401
        from PKG.registry import HANDLERS

        async def app(scope, receive, send):
            name = scope["path"].strip("/")
            handler = HANDLERS.get(name)
            body = handler() if handler else "missing"
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body.encode()})
    """)
    first = project.load("PKG.main:app")
    old_registry = sys.modules[f"{project.pkg}.registry"].HANDLERS
    assert asgi_get(first, "/hello").text == "hello v1"
    project.write("PKG/plugins.py", """
        from PKG.registry import HANDLERS

        def hello():
            return "hello v2"

        HANDLERS["hello"] = hello
    """)
    app, strategy, names = project.reload(project.root / project.pkg / "plugins.py")
    assert strategy == "wider" and names == ["registry", "plugins", "main"]
    assert asgi_get(app, "/hello").text == "hello v2"
    assert asgi_get(app, "/bye").text == "missing"
    assert set(old_registry) == {"hello", "bye"}  # the running generation's registry as it was
    assert asgi_get(first, "/hello").text == "hello v1"


# --- a generated 1,200-module project -----------------------------------------------------------

FANOUT = 4
SIZE = 1200


def generate_tree(project: Project) -> None:
    """Module i imports modules FANOUT*i+1 .. FANOUT*i+FANOUT; main imports m0."""
    project.write("PKG/__init__.py", "")
    for i in range(SIZE):
        kids = [c for c in range(FANOUT * i + 1, FANOUT * i + FANOUT + 1) if c < SIZE]
        imports = "".join(f"from PKG import m{c}\n" for c in kids)
        total = " + ".join(f"m{c}.value()" for c in kids) or "0"
        project.write(f"PKG/m{i}.py", f"{imports}\n\ndef value():\n    return {i} + {total}\n")
    project.write("PKG/main.py", """
        from PKG import m0

        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": str(m0.value()).encode()})
    """)


def ancestors(i: int) -> list[int]:
    chain = [i]
    while chain[-1]:
        chain.append((chain[-1] - 1) // FANOUT)
    return chain


def test_leaf_edit_in_a_large_project_re_executes_only_its_importers(project: Project) -> None:
    generate_tree(project)
    first = project.load("PKG.main:app")
    total = sum(range(SIZE))
    assert asgi_get(first).text == str(total)
    before = {name: module for name, module in sys.modules.items()
              if name.startswith(f"{project.pkg}.")}
    assert len(before) == SIZE + 1

    leaf = SIZE - 1
    edited = project.edit(f"PKG/m{leaf}.py", f"return {leaf} +", f"return {leaf + 1_000_000} +")
    app, strategy, names = project.reload(edited)
    assert asgi_get(app).text == str(total + 1_000_000)
    chain = ancestors(leaf)
    assert strategy == "partial"
    assert names == [f"m{i}" for i in chain] + ["main"]
    assert len(names) == 7  # of 1,201 modules
    unchanged = [n for n in before if n.rpartition(".")[2] not in set(names)]
    assert all(sys.modules[n] is before[n] for n in unchanged)

    # A module in the middle: itself and the modules above it, never the ones below.
    middle = chain[2]
    edited = project.edit(f"PKG/m{middle}.py", f"return {middle} +", f"return {middle + 5} +")
    app, strategy, names = project.reload(edited)
    assert names == [f"m{i}" for i in chain[2:]] + ["main"]
    assert asgi_get(app).text == str(total + 1_000_005)
