"""The import graph (pure data) and the recorder that fills it from real imports of modules
written to tmp_path: which edges each kind of import records, lazy imports at request time, what
is never a node, the per-file code cache, and that closing removes every hook."""

from __future__ import annotations

import builtins
import importlib
import itertools
import os
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devserve.reload.graph import ImportGraph
from devserve.reload.importer import ProjectImporter

# --- ImportGraph --------------------------------------------------------------------------------


def graph_of(edges: dict[str, list[str]]) -> ImportGraph:
    """Nodes started in the order listed (then the importees), with the given edges."""
    graph = ImportGraph()
    for name in [*edges, *(d for deps in edges.values() for d in deps)]:
        if name not in graph:
            graph.add_node(name, Path(f"/p/{name}.py"))
    for importer, deps in edges.items():
        for dep in deps:
            graph.add_edge(importer, dep)
    return graph


def test_dependents_and_dependencies_are_transitive() -> None:
    graph = graph_of({"main": ["views", "util"], "views": ["models"], "models": ["db"]})
    assert graph.dependents(["db"]) == {"db", "models", "views", "main"}
    assert graph.dependents(["util"]) == {"util", "main"}
    assert graph.dependencies(["views"]) == {"views", "models", "db"}
    assert graph.dependents(["not-a-node"]) == set()


def test_import_order_puts_importees_first() -> None:
    graph = graph_of({"main": ["views", "util"], "views": ["models", "util"], "models": ["db"]})
    order = graph.import_order({"main", "views", "models", "db", "util"})
    for importer, dep in [("main", "views"), ("views", "models"), ("models", "db"),
                          ("views", "util"), ("main", "util")]:
        assert order.index(dep) < order.index(importer)


def test_a_cycle_keeps_the_order_it_first_ran_in() -> None:
    """``pkg/__init__`` imports ``pkg.routes``, which imports ``pkg`` back: ``pkg`` started first
    and must be re-executed first, so the cycle replays as Python first ran it."""
    graph = graph_of({"pkg": ["pkg.routes", "pkg.db"], "pkg.routes": ["pkg", "pkg.db"]})
    assert graph.import_order({"pkg", "pkg.routes", "pkg.db"}) == ["pkg.db", "pkg", "pkg.routes"]


def test_import_order_of_a_deep_chain_does_not_recurse() -> None:
    graph = ImportGraph()
    names = [f"m{i}" for i in range(5000)]
    for name in reversed(names):
        graph.add_node(name, Path(f"/p/{name}.py"))
    for a, b in itertools.pairwise(names):
        graph.add_edge(a, b)
    assert graph.import_order(set(names)) == list(reversed(names))


def test_re_executing_a_node_keeps_its_edges() -> None:
    """A re-execution may reach a module without any recordable import (Django's
    ``include("app.urls")`` on a module already loaded): the old edges stay, new ones add."""
    graph = graph_of({"main": ["old_dep"], "user": ["main"], "new_dep": []})
    graph.add_node("main", Path("/p/main.py"))  # executes again ...
    graph.add_edge("main", "new_dep")
    assert graph.deps("main") == {"old_dep", "new_dep"}
    assert graph.users("main") == {"user"}  # who imports it is unchanged
    assert graph.users("old_dep") == {"main"}


def test_edges_only_between_nodes_and_never_to_self() -> None:
    graph = graph_of({"a": []})
    graph.add_edge("a", "json")
    graph.add_edge("json", "a")
    graph.add_edge("a", "a")
    assert graph.deps("a") == frozenset() and graph.users("a") == frozenset()


def test_remove_drops_node_and_edges_and_copy_restores() -> None:
    graph = graph_of({"main": ["gone", "kept"], "gone": ["kept"]})
    snapshot = graph.copy()
    graph.remove("gone")
    assert "gone" not in graph
    assert graph.deps("main") == {"kept"} and graph.users("kept") == {"main"}
    assert graph.module_for(Path("/p/gone.py")) is None
    graph.restore(snapshot)
    assert graph.deps("main") == {"gone", "kept"} and graph.module_for(Path("/p/gone.py")) == "gone"


def test_children_modules_under_and_missing() -> None:
    graph = graph_of({"pkg": [], "pkg.a": [], "pkg.a.b": [], "other": []})
    assert graph.children("pkg") == {"pkg.a"}
    assert graph.modules_under(Path("/p")) == {"pkg", "pkg.a", "pkg.a.b", "other"}
    graph.note_missing("pkg.a", "local_settings")
    assert graph.importers_of_missing("local_settings") == {"pkg.a"}


# --- the recorder, on real imports --------------------------------------------------------------

APP = "async def app(scope, receive, send): pass\n"


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pkg = f"grph_{uuid.uuid4().hex[:10]}"
        self.importers: list[ProjectImporter] = []

    def write(self, rel: str, source: str) -> Path:
        path = self.root / rel.replace("PKG", self.pkg)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).replace("PKG", self.pkg))
        return path

    def importer(self, target: str) -> ProjectImporter:
        importer = ProjectImporter(target.replace("PKG", self.pkg), dirs=[self.root],
                                   app_dir=str(self.root))
        self.importers.append(importer)
        return importer

    def deps(self, importer: ProjectImporter, stem: str) -> set[str]:
        name = stem.replace("PKG", self.pkg)
        return {d.replace(self.pkg, "PKG") for d in importer.graph.deps(name)}


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    path = list(sys.path)
    proj = Project(tmp_path.resolve())
    yield proj
    for importer in proj.importers:
        importer.close()
    sys.path[:] = path
    for name in [n for n in sys.modules if n.startswith(proj.pkg)]:
        del sys.modules[name]


def test_each_kind_of_import_statement_records_its_edges(project: Project) -> None:
    project.write("PKG/__init__.py", "")
    project.write("PKG/consts.py", "VALUE = 1\n")
    project.write("PKG/sub/__init__.py", "")
    project.write("PKG/sub/leaf.py", "X = 1\n")
    project.write("PKG/sub/sibling.py", "from . import leaf\nfrom .leaf import X\n")
    project.write("PKG/dotted.py", "import PKG.sub.leaf\n")
    project.write("PKG/fromsub.py", "from PKG.sub import leaf\n")
    project.write("PKG/late.py", "from PKG.consts import VALUE\n")  # consts already loaded
    project.write("PKG/main.py", """
        import json
        from PKG import consts
        from PKG.sub import sibling
        from PKG import dotted, fromsub, late
        async def app(scope, receive, send): pass
    """)
    importer = project.importer("PKG.main:app")
    importer.load()
    assert project.deps(importer, "PKG.main") == {
        "PKG", "PKG.consts", "PKG.sub", "PKG.sub.sibling", "PKG.dotted", "PKG.fromsub",
        "PKG.late"}
    assert project.deps(importer, "PKG.sub.sibling") == {"PKG.sub", "PKG.sub.leaf"}
    assert project.deps(importer, "PKG.dotted") == {"PKG", "PKG.sub", "PKG.sub.leaf"}
    assert project.deps(importer, "PKG.fromsub") == {"PKG.sub", "PKG.sub.leaf"}
    assert project.deps(importer, "PKG.late") == {"PKG.consts"}
    assert "json" not in importer.graph and "pytest" not in importer.graph


def test_import_module_while_a_module_executes_is_an_edge(project: Project) -> None:
    """A framework importing on a module's behalf (``include("app.urls")``) while it runs."""
    project.write("PKG/__init__.py", "")
    project.write("PKG/urls.py", "patterns = ['x']\n")
    project.write("PKG/main.py", """
        import importlib
        urls = importlib.import_module('PKG.urls').patterns
        async def app(scope, receive, send): pass
    """)
    importer = project.importer("PKG.main:app")
    importer.load()
    assert "PKG.urls" in project.deps(importer, "PKG.main")


def test_lazy_imports_at_request_time_are_recorded(project: Project) -> None:
    project.write("PKG/__init__.py", "")
    project.write("PKG/helpers.py", "def text():\n    return 'hi'\n")
    project.write("PKG/views.py", "V = 1\n")
    project.write("PKG/main.py", """
        import importlib

        def handler():
            from PKG.helpers import text
            return text()

        def resolve_view():
            return importlib.import_module('PKG.views')

        async def app(scope, receive, send): pass
    """)
    importer = project.importer("PKG.main:app")
    importer.load()
    assert f"{project.pkg}.helpers" not in importer.graph
    main = sys.modules[f"{project.pkg}.main"]
    assert main.handler() == "hi"  # a request runs the lazy import
    assert "PKG.helpers" in project.deps(importer, "PKG.main")
    main.resolve_view()  # like a framework resolving a view: a node without an importer
    assert f"{project.pkg}.views" in importer.graph
    assert importer.graph.users(f"{project.pkg}.views") == frozenset()


def test_globals_scan_records_objects_picked_up_without_an_import_statement(
        project: Project) -> None:
    project.write("PKG/__init__.py", "")
    project.write("PKG/tools.py", "def tool():\n    return 1\n")
    project.write("PKG/reexport.py", "from PKG.tools import tool\n")
    project.write("PKG/main.py", """
        import sys
        import PKG.reexport
        tool = sys.modules['PKG.reexport'].tool  # no import statement names PKG.tools
        async def app(scope, receive, send): pass
    """)
    importer = project.importer("PKG.main:app")
    importer.load()
    assert "PKG.tools" in project.deps(importer, "PKG.main")


def test_failed_import_is_remembered_for_a_file_created_later(project: Project) -> None:
    missing = f"{project.pkg}_local"
    project.write("PKG/__init__.py", "")
    project.write("PKG/main.py", f"""
        try:
            from {missing} import VALUE
        except ImportError:
            VALUE = 'default'
        async def app(scope, receive, send): pass
    """)
    importer = project.importer("PKG.main:app")
    importer.load()
    assert importer.graph.importers_of_missing(missing) == {f"{project.pkg}.main"}


def test_site_packages_under_the_project_is_not_a_node(project: Project) -> None:
    site = project.root / ".venv" / "lib" / "python3.11" / "site-packages"
    project.write(f".venv/lib/python3.11/site-packages/{project.pkg}_dep.py", "X = 1\n")
    sys.path.insert(0, str(site))
    project.write("PKG/__init__.py", "")
    project.write("PKG/main.py", f"import {project.pkg}_dep\n{APP}")
    importer = project.importer("PKG.main:app")
    importer.load()
    assert f"{project.pkg}_dep" not in importer.graph
    assert f"{project.pkg}.main" in importer.graph


def test_close_removes_the_hooks_and_leaves_a_later_hook_alone(project: Project) -> None:
    project.write("PKG/__init__.py", "")
    project.write("PKG/main.py", "async def app(scope, receive, send): pass\n")
    original_import, finders = builtins.__import__, list(sys.meta_path)
    importer = project.importer("PKG.main:app")
    importer.load()
    assert builtins.__import__ is not original_import
    importer.close()
    assert builtins.__import__ is original_import and sys.meta_path == finders

    importer.load()
    ours = builtins.__import__
    calls: list[str] = []

    def later_hook(name: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return ours(name, *args, **kwargs)

    builtins.__import__ = later_hook
    try:
        importer.close()
        assert builtins.__import__ is later_hook  # not clobbered
        importlib.import_module("json")
        exec("import json", {"__name__": "x"})
        assert calls == ["json"]
    finally:
        builtins.__import__ = original_import


def test_unchanged_dependents_reuse_their_code_and_changed_files_compile_fresh(
        project: Project) -> None:
    """A module re-executed only because a dependency changed runs the very same code objects;
    the changed file is compiled from source even when its mtime and size are unchanged."""
    project.write("PKG/__init__.py", "")
    leaf = project.write("PKG/leaf.py", "def text():\n    return 'AAAA'\n")
    project.write("PKG/main.py", "from PKG.leaf import text\n\ndef show():\n    return text()\n"
                                 "async def app(scope, receive, send): pass\n")
    importer = project.importer("PKG.main:app")
    importer.load()
    old_main = sys.modules[f"{project.pkg}.main"]
    stat = leaf.stat()
    leaf.write_text("def text():\n    return 'BBBB'\n")
    os.utime(leaf, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    outcome = importer.reload([leaf])
    new_main = sys.modules[f"{project.pkg}.main"]
    assert new_main is not old_main and new_main.show() == "BBBB"
    assert new_main.show.__code__ is old_main.show.__code__  # the cached code object
    assert outcome.reexecuted == (f"{project.pkg}.leaf", f"{project.pkg}.main")
