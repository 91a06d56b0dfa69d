"""``reimport_app`` (the staged re-import behind thread-mode reloads) against real modules written
to tmp_path: project modules are purged and imported fresh, a failed import puts every previous
``sys.modules`` entry back, site-packages is never purged, packages reload with their submodules,
and ``.pyc`` files are never deleted."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import py_compile
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devserve.reload.importer import AppLoadFailure, ProjectImporter, load_app, reimport_app


@pytest.fixture(autouse=True)
def restore_import_state() -> Iterator[None]:
    """Modules a test writes and app dirs it adds do not leak into other tests."""
    path = list(sys.path)
    modules = set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def app_source(message: str, extra: str = "") -> str:
    return textwrap.dedent(f"""
        {extra}
        MESSAGE = {message!r}

        async def app(scope, receive, send):
            await send({{"type": "http.response.start", "status": 200, "headers": []}})
            await send({{"type": "http.response.body", "body": MESSAGE.encode()}})
    """)


def call(app: Any) -> bytes:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "path": "/"}, receive, send))
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


class Project:
    """A project directory with module names unique to this test (no cross-test clashes)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.prefix = f"rimp_{uuid.uuid4().hex[:10]}"

    def name(self, stem: str) -> str:
        return f"{self.prefix}_{stem}"

    def write(self, rel: str, source: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return path

    def load(self, target: str) -> Any:
        return load_app(target, app_dir=str(self.root)).app

    def reimport(self, target: str) -> Any:
        return reimport_app(target, dirs=[self.root], app_dir=str(self.root)).app


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "proj")


def test_edit_is_seen_and_module_object_replaced(project: Project) -> None:
    mod = project.name("app")
    project.write(f"{mod}.py", app_source("v1"))
    first = project.load(f"{mod}:app")
    old_module = sys.modules[mod]
    assert call(first) == b"v1"

    project.write(f"{mod}.py", app_source("v2"))
    second = project.reimport(f"{mod}:app")
    assert call(second) == b"v2"
    assert sys.modules[mod] is not old_module
    assert call(first) == b"v1"  # the running generation's app object is untouched


def test_project_helper_modules_are_purged_too(project: Project) -> None:
    app, helper = project.name("app"), project.name("helper")
    project.write(f"{helper}.py", "TEXT = 'helper v1'\n")
    project.write(f"{mod_path(app)}", app_source("x", extra=f"from {helper} import TEXT")
                  .replace("MESSAGE = 'x'", "MESSAGE = TEXT"))
    assert call(project.load(f"{app}:app")) == b"helper v1"
    project.write(f"{helper}.py", "TEXT = 'helper v2'\n")
    assert call(project.reimport(f"{app}:app")) == b"helper v2"


def mod_path(name: str) -> str:
    return f"{name}.py"


def compile_pyc(path: Path) -> Path:
    """Write the real ``__pycache__`` bytecode for *path* (this environment may run with
    PYTHONDONTWRITEBYTECODE, so the import itself might not write one)."""
    cfile = Path(importlib.util.cache_from_source(str(path)))
    py_compile.compile(str(path), cfile=str(cfile), doraise=True)
    return cfile


def test_same_size_same_mtime_edit_is_still_seen(project: Project) -> None:
    """A .pyc is keyed on whole-second mtime and size; an edit inside the same second with the
    same length must not load stale bytecode."""
    mod = project.name("app")
    path = project.write(f"{mod}.py", app_source("AAAA"))
    pyc = compile_pyc(path)  # bytecode for AAAA, valid for this mtime and size
    assert call(project.load(f"{mod}:app")) == b"AAAA"
    stat = path.stat()
    path.write_text(app_source("BBBB"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert pyc.exists()  # the stale bytecode is still there and still looks valid
    assert call(project.reimport(f"{mod}:app")) == b"BBBB"


def test_pyc_files_are_never_deleted(project: Project) -> None:
    mod = project.name("app")
    pyc = compile_pyc(project.write(f"{mod}.py", app_source("v1")))
    project.load(f"{mod}:app")
    cache = project.root / "__pycache__"
    before = sorted(p.name for p in cache.glob(f"{mod}*.pyc"))
    assert before == [pyc.name]
    project.write(f"{mod}.py", app_source("v2"))
    project.reimport(f"{mod}:app")
    project.write(f"{mod}.py", "def broken(:\n")
    with pytest.raises(AppLoadFailure):
        project.reimport(f"{mod}:app")
    assert sorted(p.name for p in cache.glob(f"{mod}*.pyc")) == before


def test_syntax_error_restores_previous_modules(project: Project) -> None:
    app, helper = project.name("app"), project.name("helper")
    project.write(f"{helper}.py", "TEXT = 'ok'\n")
    project.write(f"{app}.py", app_source("v1", extra=f"import {helper}"))
    served = project.load(f"{app}:app")
    old = {name: sys.modules[name] for name in (app, helper)}

    path = project.write(f"{app}.py",
                         "import os\n\nasync def app(scope, receive, send)\n    pass\n")
    with pytest.raises(AppLoadFailure) as info:
        project.reimport(f"{app}:app")
    err = info.value
    assert err.location == f"{path}:3"
    assert "SyntaxError" in err.one_line()
    assert f"({path}:3)" in err.one_line()
    for name, module in old.items():
        assert sys.modules[name] is module, f"{name} was not restored"
    assert call(served) == b"v1"

    # The fix is picked up by the next attempt: the failed one left nothing stale behind.
    project.write(f"{app}.py", app_source("v3", extra=f"import {helper}"))
    assert call(project.reimport(f"{app}:app")) == b"v3"


def test_runtime_error_restores_and_drops_half_imported_modules(project: Project) -> None:
    app, fresh = project.name("app"), project.name("fresh")
    project.write(f"{app}.py", app_source("v1"))
    project.load(f"{app}:app")
    old = sys.modules[app]
    project.write(f"{fresh}.py", "VALUE = 1\n")
    path = project.write(f"{app}.py", f"import {fresh}\n\nraise RuntimeError('boom at import')\n")
    with pytest.raises(AppLoadFailure) as info:
        project.reimport(f"{app}:app")
    assert info.value.location == f"{path}:3"
    assert "RuntimeError: boom at import" in info.value.one_line()
    assert "boom at import" in info.value.traceback_text
    assert sys.modules[app] is old
    assert fresh not in sys.modules  # imported only by the failed attempt: removed again


def test_missing_attribute_after_edit_restores(project: Project) -> None:
    app = project.name("app")
    project.write(f"{app}.py", app_source("v1"))
    project.load(f"{app}:app")
    old = sys.modules[app]
    project.write(f"{app}.py", app_source("v1").replace("async def app", "async def appp"))
    with pytest.raises(Exception, match="did you mean 'appp'"):
        project.reimport(f"{app}:app")
    assert sys.modules[app] is old


def test_site_packages_inside_the_project_is_never_purged(project: Project) -> None:
    """A virtualenv inside the project dir: its modules are under a watched dir, but they are
    third-party code and must keep their identity (and their state) across reloads."""
    app, dep = project.name("app"), project.name("dep")
    site = project.root / ".venv" / "lib" / "python3.11" / "site-packages"
    project.write(f".venv/lib/python3.11/site-packages/{dep}.py", "STATE = []\n")
    sys.path.insert(0, str(site))
    project.write(f"{app}.py", app_source("v1", extra=f"import {dep}; {dep}.STATE.append(1)"))
    project.load(f"{app}:app")
    dep_module = sys.modules[dep]
    httpx_module = sys.modules.setdefault("httpx", __import__("httpx"))

    project.write(f"{app}.py", app_source("v2", extra=f"import {dep}; {dep}.STATE.append(2)"))
    assert call(project.reimport(f"{app}:app")) == b"v2"
    assert sys.modules[dep] is dep_module
    assert dep_module.STATE == [1, 2]
    assert sys.modules["httpx"] is httpx_module

    project.write(f"{app}.py", "raise ImportError('nope')\n")
    with pytest.raises(AppLoadFailure):
        project.reimport(f"{app}:app")
    assert sys.modules[dep] is dep_module


@pytest.mark.parametrize("layout", ["app-in-init", "app-in-main"])
def test_package_submodule_edit_takes_effect(project: Project, layout: str) -> None:
    pkg = project.name("pkg")
    project.write(f"{pkg}/routes.py", "def message():\n    return 'routes v1'\n")
    init = f"from {pkg}.routes import message\nfrom {pkg} import routes\n"
    handler = textwrap.dedent("""
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": message().encode()})
    """)
    if layout == "app-in-init":
        project.write(f"{pkg}/__init__.py", init + handler)
        target = f"{pkg}:app"
    else:
        project.write(f"{pkg}/__init__.py", init)
        main = project.name("main")
        project.write(f"{main}.py", f"from {pkg} import message\n" + handler)
        target = f"{main}:app"
    assert call(project.load(target)) == b"routes v1"
    old_pkg, old_routes = sys.modules[pkg], sys.modules[f"{pkg}.routes"]

    project.write(f"{pkg}/routes.py", "def message():\n    return 'routes v2'\n")
    assert call(project.reimport(target)) == b"routes v2"
    assert sys.modules[pkg] is not old_pkg, "stale parent package kept"
    assert sys.modules[f"{pkg}.routes"] is not old_routes
    assert sys.modules[pkg].routes is sys.modules[f"{pkg}.routes"]

    # A broken submodule restores parent and child together.
    project.write(f"{pkg}/routes.py", "def message(:\n")
    new_pkg, new_routes = sys.modules[pkg], sys.modules[f"{pkg}.routes"]
    with pytest.raises(AppLoadFailure) as info:
        project.reimport(target)
    assert info.value.location == f"{project.root / pkg / 'routes.py'}:1"
    assert sys.modules[pkg] is new_pkg
    assert sys.modules[f"{pkg}.routes"] is new_routes


def test_new_module_file_created_after_first_import_is_found(project: Project) -> None:
    app, late = project.name("app"), project.name("late")
    project.write(f"{app}.py", app_source("v1"))
    project.load(f"{app}:app")
    project.write(f"{late}.py", "TEXT = 'late file'\n")
    project.write(f"{app}.py", app_source("x", extra=f"from {late} import TEXT")
                  .replace("MESSAGE = 'x'", "MESSAGE = TEXT"))
    assert call(project.reimport(f"{app}:app")) == b"late file"


def test_modules_outside_the_dirs_are_not_purged(project: Project, tmp_path: Path) -> None:
    other = Project(tmp_path / "elsewhere")
    lib = other.name("lib")
    other.write(f"{lib}.py", "COUNT = [0]\n")
    sys.path.insert(0, str(other.root))
    app = project.name("app")
    project.write(f"{app}.py", app_source("v1", extra=f"import {lib}"))
    project.load(f"{app}:app")
    lib_module = sys.modules[lib]
    project.write(f"{app}.py", app_source("v2", extra=f"import {lib}"))
    assert call(project.reimport(f"{app}:app")) == b"v2"
    assert sys.modules[lib] is lib_module


# --- ProjectImporter: partial re-import from the recorded graph --------------------------------


@pytest.fixture
def importers() -> Iterator[list[ProjectImporter]]:
    made: list[ProjectImporter] = []
    yield made
    for importer in made:
        importer.close()


def project_importer(project: Project, made: list[ProjectImporter], target: str,
                     **kwargs: Any) -> ProjectImporter:
    importer = ProjectImporter(target, dirs=[project.root], app_dir=str(project.root), **kwargs)
    made.append(importer)
    return importer


def serving(body: str, header: str = "") -> str:
    """A module: *header*, then an ASGI app answering with the str expression *body*."""
    return header + textwrap.dedent(f"""

        async def app(scope, receive, send):
            await send({{"type": "http.response.start", "status": 200, "headers": []}})
            await send({{"type": "http.response.body", "body": ({body}).encode()}})
    """)


def layered(project: Project) -> dict[str, str]:
    """main -> views -> models -> db, main -> util; other is imported by nobody's chain."""
    n = {stem: project.name(stem) for stem in ("main", "views", "models", "db", "util", "other")}
    project.write(f"{n['db']}.py", "NAME = 'db v1'\n")
    project.write(f"{n['models']}.py", f"from {n['db']} import NAME\nMODEL = 'model:' + NAME\n")
    project.write(f"{n['views']}.py", f"from {n['models']} import MODEL\n\n"
                                      "def view():\n    return 'view:' + MODEL\n")
    project.write(f"{n['util']}.py", "HELP = 1\n")
    project.write(f"{n['other']}.py", "X = 1\n")
    project.write(f"{n['main']}.py", serving("view()", f"import {n['util']}, {n['other']}\n"
                                                        f"from {n['views']} import view\n"))
    return n


def test_leaf_edit_re_executes_only_the_leaf_and_its_importers(
        project: Project, importers: list[ProjectImporter]) -> None:
    n = layered(project)
    importer = project_importer(project, importers, f"{n['main']}:app")
    first = importer.load()
    assert call(first.app) == b"view:model:db v1"
    kept = {stem: sys.modules[n[stem]] for stem in ("util", "other")}
    replaced = {stem: sys.modules[n[stem]] for stem in ("db", "models", "views", "main")}

    db = project.write(f"{n['db']}.py", "NAME = 'db v2'\n")
    outcome = importer.reload([db])
    assert outcome.strategy == "partial" and outcome.reason is None
    assert outcome.reexecuted == (n["db"], n["models"], n["views"], n["main"])
    assert call(outcome.loaded.app) == b"view:model:db v2"
    for stem, module in kept.items():
        assert sys.modules[n[stem]] is module
    for stem, module in replaced.items():
        assert sys.modules[n[stem]] is not module
    assert call(first.app) == b"view:model:db v1"  # the running generation is untouched


def test_a_changed_file_that_is_no_module_re_executes_nothing(
        project: Project, importers: list[ProjectImporter]) -> None:
    n = layered(project)
    importer = project_importer(project, importers, f"{n['main']}:app")
    first = importer.load()
    template = project.write("templates/index.html", "<p>hi</p>")
    never_imported = project.write(f"{project.name('script')}.py", "print('x')\n")
    outcome = importer.reload([template, never_imported])
    assert outcome.strategy == "partial" and outcome.reexecuted == ()
    assert outcome.loaded.app is first.app


def test_failed_partial_restores_and_its_files_are_applied_with_the_next_batch(
        project: Project, importers: list[ProjectImporter]) -> None:
    n = layered(project)
    importer = project_importer(project, importers, f"{n['main']}:app")
    served = importer.load().app
    before = {name: sys.modules[name] for name in n.values()}
    db = project.write(f"{n['db']}.py", "NAME = 'db v2'\n")
    models = project.write(f"{n['models']}.py", "MODEL = (\n")
    with pytest.raises(AppLoadFailure) as info:
        importer.reload([db, models])
    assert info.value.location == f"{models}:1"
    assert {name: sys.modules[name] for name in n.values()} == before
    assert call(served) == b"view:model:db v1"

    # Only models.py is saved again; the db.py edit of the failed batch is not forgotten.
    project.write(f"{n['models']}.py", f"from {n['db']} import NAME\nMODEL = 'fixed:' + NAME\n")
    outcome = importer.reload([models])
    assert call(outcome.loaded.app) == b"view:fixed:db v2"
    assert n["db"] in outcome.reexecuted


def test_runtime_error_in_an_importer_restores_the_changed_module_too(
        project: Project, importers: list[ProjectImporter]) -> None:
    n = layered(project)
    importer = project_importer(project, importers, f"{n['main']}:app")
    importer.load()
    old_db = sys.modules[n["db"]]
    db = project.write(f"{n['db']}.py", "NAME = 'db v2'\n")
    views = project.write(f"{n['views']}.py", "raise LookupError('no view')\n")
    with pytest.raises(AppLoadFailure) as info:
        importer.reload([db, views])
    assert info.value.location == f"{views}:1"
    assert "LookupError: no view" in info.value.one_line()
    assert sys.modules[n["db"]] is old_db


def test_new_module_imported_by_an_edited_module(
        project: Project, importers: list[ProjectImporter]) -> None:
    n = layered(project)
    importer = project_importer(project, importers, f"{n['main']}:app")
    importer.load()
    fresh = project.name("fresh")
    new_file = project.write(f"{fresh}.py", "NAME = 'brand new'\n")
    views = project.write(f"{n['views']}.py", f"from {fresh} import NAME\n\n"
                                              "def view():\n    return NAME\n")
    outcome = importer.reload([new_file, views])
    assert call(outcome.loaded.app) == b"brand new"
    assert importer.graph.users(fresh) == {n["views"]}
    # ... and it is part of the graph from now on.
    project.write(f"{fresh}.py", "NAME = 'newer'\n")
    outcome = importer.reload([new_file])
    assert outcome.reexecuted == (fresh, n["views"], n["main"])
    assert call(outcome.loaded.app) == b"newer"


def test_a_file_created_for_a_failed_import_re_executes_its_importer(
        project: Project, importers: list[ProjectImporter]) -> None:
    main, local = project.name("main"), project.name("local")
    project.write(f"{main}.py", serving("LOCAL", f"""
try:
    from {local} import MESSAGE as LOCAL
except ImportError:
    LOCAL = 'default'
"""))
    importer = project_importer(project, importers, f"{main}:app")
    assert call(importer.load().app) == b"default"
    created = project.write(f"{local}.py", "MESSAGE = 'local settings'\n")
    outcome = importer.reload([created])
    assert outcome.reexecuted == (main, local)  # main imports the new file as it runs
    assert call(outcome.loaded.app) == b"local settings"


def test_deleted_module_is_dropped(project: Project, importers: list[ProjectImporter]) -> None:
    n = layered(project)
    importer = project_importer(project, importers, f"{n['main']}:app")
    importer.load()
    other = project.root / f"{n['other']}.py"
    main = project.root / f"{n['main']}.py"
    main.write_text(main.read_text().replace(f", {n['other']}", ""))
    other.unlink()
    outcome = importer.reload([other, main])
    assert n["other"] not in sys.modules and n["other"] not in importer.graph
    assert outcome.reexecuted == (n["main"],)
    assert call(outcome.loaded.app) == b"view:model:db v1"


def test_deleting_a_module_still_imported_fails_and_restores(
        project: Project, importers: list[ProjectImporter]) -> None:
    n = layered(project)
    importer = project_importer(project, importers, f"{n['main']}:app")
    importer.load()
    util_module = sys.modules[n["util"]]
    util = project.root / f"{n['util']}.py"
    util.unlink()
    with pytest.raises(AppLoadFailure) as info:
        importer.reload([util])
    assert "ModuleNotFoundError" in info.value.one_line()
    assert sys.modules[n["util"]] is util_module and n["util"] in importer.graph


def test_package_init_edit_keeps_unchanged_submodules(
        project: Project, importers: list[ProjectImporter]) -> None:
    pkg = project.name("pkg")
    project.write(f"{pkg}/__init__.py", "GREETING = 'v1'\n")
    project.write(f"{pkg}/tools.py", "def shout(text):\n    return text.upper()\n")
    project.write(f"{pkg}/web.py", serving(f"shout({pkg}.GREETING)",
                                           f"import {pkg}\nfrom {pkg}.tools import shout\n"))
    importer = project_importer(project, importers, f"{pkg}.web:app")
    assert call(importer.load().app) == b"V1"
    tools = sys.modules[f"{pkg}.tools"]
    init = project.write(f"{pkg}/__init__.py", "GREETING = 'v2'\n")
    outcome = importer.reload([init])
    assert outcome.strategy == "partial"
    assert set(outcome.reexecuted) == {pkg, f"{pkg}.web"}
    assert call(outcome.loaded.app) == b"V2"
    assert sys.modules[f"{pkg}.tools"] is tools
    assert sys.modules[pkg].tools is tools  # re-attached to the new package object


def test_import_cycle_is_replayed_in_its_first_order(
        project: Project, importers: list[ProjectImporter]) -> None:
    """Flask's classic layout: the package creates the app and imports routes at the bottom;
    routes imports the app back from the half-initialised package."""
    pkg = project.name("site")
    project.write(f"{pkg}/__init__.py", f"""
ROUTES = {{}}

async def app(scope, receive, send):
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": ROUTES["/"]().encode()}})

from {pkg} import routes  # noqa: E402
""")
    project.write(f"{pkg}/routes.py", f"from {pkg} import ROUTES\n\n"
                                      "def index():\n    return 'index v1'\n\n"
                                      "ROUTES['/'] = index\n")
    importer = project_importer(project, importers, f"{pkg}:app")
    assert call(importer.load().app) == b"index v1"
    routes = project.write(f"{pkg}/routes.py", f"from {pkg} import ROUTES\n\n"
                                               "def index():\n    return 'index v2'\n\n"
                                               "ROUTES['/'] = index\n")
    outcome = importer.reload([routes])
    assert outcome.reexecuted == (pkg, f"{pkg}.routes")
    assert call(outcome.loaded.app) == b"index v2"


def test_module_loaded_before_recording_forces_a_full_re_import(
        project: Project, importers: list[ProjectImporter]) -> None:
    n = layered(project)
    sys.path.insert(0, str(project.root))
    importlib.import_module(n["util"])  # loaded by someone before the importer started
    importer = project_importer(project, importers, f"{n['main']}:app")
    importer.load()
    util = project.write(f"{n['util']}.py", "HELP = 2\n")
    outcome = importer.reload([util])
    assert outcome.strategy == "full"
    assert outcome.reason is not None and n["util"] in outcome.reason
    assert set(outcome.reexecuted) == set(n.values())


def test_full_when_asked_or_before_a_recorded_load(
        project: Project, importers: list[ProjectImporter]) -> None:
    n = layered(project)
    importer = project_importer(project, importers, f"{n['main']}:app")
    outcome = importer.reload([project.root / f"{n['db']}.py"])  # never loaded
    assert outcome.strategy == "full" and outcome.reason is not None
    assert call(outcome.loaded.app) == b"view:model:db v1"
    outcome = importer.reload(None)
    assert outcome.strategy == "full" and outcome.reason == "full re-import requested"
    assert set(outcome.reexecuted) == set(n.values())
    # The full re-import recorded a graph: the next edit is partial.
    db = project.write(f"{n['db']}.py", "NAME = 'db v3'\n")
    outcome = importer.reload([db])
    assert outcome.strategy == "partial" and call(outcome.loaded.app) == b"view:model:db v3"


def test_factory_is_called_again_after_a_partial_reload(
        project: Project, importers: list[ProjectImporter]) -> None:
    main, conf = project.name("main"), project.name("conf")
    project.write(f"{conf}.py", "TEXT = 'conf v1'\n")
    project.write(f"{main}.py", f"""
import {conf}

def create_app():
    text = {conf}.TEXT

    async def app(scope, receive, send):
        await send({{"type": "http.response.start", "status": 200, "headers": []}})
        await send({{"type": "http.response.body", "body": text.encode()}})
    return app
""")
    importer = project_importer(project, importers, f"{main}:create_app", factory=True)
    assert call(importer.load().app) == b"conf v1"
    edited = project.write(f"{conf}.py", "TEXT = 'conf v2'\n")
    assert call(importer.reload([edited]).loaded.app) == b"conf v2"


def test_changed_path_spelt_through_a_symlinked_dir(
        project: Project, importers: list[ProjectImporter], tmp_path: Path) -> None:
    """The modules were imported through the resolved dir; the watcher reports the path through
    the symlink the user configured (or the other way round): the same module either way."""
    n = layered(project)
    link = tmp_path / "link"
    link.symlink_to(project.root, target_is_directory=True)
    importer = ProjectImporter(f"{n['main']}:app", dirs=[link], app_dir=str(link))
    importers.append(importer)
    importer.load()
    assert sys.modules[n["db"]].__file__ == str(project.root / f"{n['db']}.py")
    (link / f"{n['db']}.py").write_text("NAME = 'db v2'\n")
    outcome = importer.reload([link / f"{n['db']}.py"])
    assert outcome.strategy == "partial" and outcome.reexecuted[0] == n["db"]
    assert call(outcome.loaded.app) == b"view:model:db v2"


@pytest.mark.parametrize("broken", ["syntax", "runtime"])
def test_failure_using_an_object_of_an_unchanged_module_is_retried_wider_once(
        project: Project, importers: list[ProjectImporter], broken: str) -> None:
    """A failure may come from state the unchanged module kept (Flask refusing to decorate a
    registered blueprint): the attempt is retried once with that module re-executed too. The
    user's real error then shows as is; a SyntaxError is never retried."""
    main, registry, views = project.name("main"), project.name("registry"), project.name("views")
    runs = project.root / "registry-runs.txt"
    project.write(f"{registry}.py", f"""
        with open({str(runs)!r}, "a") as log:
            log.write("run\\n")

        class Registry:
            def __init__(self):
                self.items = []

        REGISTRY = Registry()
    """)
    project.write(f"{views}.py", f"from {registry} import REGISTRY\nREGISTRY.items.append(1)\n")
    project.write(f"{main}.py", serving("'ok'", f"import {views}\n"))
    importer = project_importer(project, importers, f"{main}:app")
    served = importer.load().app
    registry_module = sys.modules[registry]
    assert runs.read_text().count("run") == 1

    source = "REGISTRY.items.append(\n" if broken == "syntax" else "REGISTRY.itemz.append(1)\n"
    edited = project.write(f"{views}.py", f"from {registry} import REGISTRY\n{source}")
    with pytest.raises(AppLoadFailure) as info:
        importer.reload([edited])
    assert info.value.location.startswith(f"{edited}:")
    assert runs.read_text().count("run") == (1 if broken == "syntax" else 2)
    assert sys.modules[registry] is registry_module
    assert registry_module.REGISTRY.items == [1]  # nothing of the failed attempts stays
    assert call(served) == b"ok"
