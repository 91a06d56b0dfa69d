"""The project's import graph: which project module imports which, recorded as modules execute.

Nodes are the names of project modules (source files under the watched dirs; never site-packages
or the stdlib). An edge ``importer -> imported`` means the importer holds references into the
imported module, so when the imported module is re-executed the importer must be too. Each node
also keeps its file and when it last started executing: inside an import cycle, re-executing the
members in that order replays the cycle the way Python first ran it.

Pure data: :mod:`devserve.reload.recorder` fills it, :mod:`devserve.reload.importer` reads it.
Edges may be added from any thread (a request importing lazily), so mutations hold a lock.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path


class ImportGraph:
    """Project modules, who imports whom, and imports that found no module (yet)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._path: dict[str, Path] = {}
        self._by_path: dict[Path, str] = {}
        self._deps: dict[str, set[str]] = {}  # importer -> imported
        self._users: dict[str, set[str]] = {}  # imported -> importers
        self._started: dict[str, int] = {}
        self._children: dict[str, set[str]] = {}  # package -> loaded submodules
        self._missing: dict[str, set[str]] = {}  # module name not found -> importers
        self._clock = itertools.count()

    # --- recording ------------------------------------------------------------------------------

    def add_node(self, name: str, path: Path) -> None:
        """*name* starts executing from *path*. Its outgoing edges are kept and added to: a
        re-execution may reach a module in a way nothing records (``importlib.import_module``
        of a module already loaded, as Django's ``include("app.urls")`` does), and an edge
        too many only costs a re-execution, an edge too few serves stale code. A full
        re-import records the graph afresh."""
        with self._lock:
            self._deps.setdefault(name, set())
            self._users.setdefault(name, set())
            old = self._path.get(name)
            if old is not None and self._by_path.get(old) == name:
                del self._by_path[old]
            self._path[name] = path
            self._by_path[path] = name
            self._started[name] = next(self._clock)
            parent = name.rpartition(".")[0]
            if parent:
                self._children.setdefault(parent, set()).add(name)

    def add_edge(self, importer: str, imported: str) -> None:
        """Record that *importer* uses *imported*; ignored unless both are project modules."""
        if importer == imported or importer not in self._deps or imported not in self._deps:
            return
        with self._lock:
            deps = self._deps.get(importer)
            users = self._users.get(imported)
            if deps is not None and users is not None:
                deps.add(imported)
                users.add(importer)

    def note_missing(self, importer: str, name: str) -> None:
        """*importer* tried to import *name* and found no module: a file created later may be it."""
        with self._lock:
            self._missing.setdefault(name, set()).add(importer)

    def remove(self, name: str) -> None:
        """Drop *name* (its file was deleted) with every edge that touches it."""
        with self._lock:
            for dep in self._deps.pop(name, ()):
                self._users.get(dep, set()).discard(name)
            for user in self._users.pop(name, ()):
                self._deps.get(user, set()).discard(name)
            path = self._path.pop(name, None)
            if path is not None and self._by_path.get(path) == name:
                del self._by_path[path]
            self._started.pop(name, None)
            self._children.get(name.rpartition(".")[0], set()).discard(name)

    def clear(self) -> None:
        self.restore(ImportGraph())

    # --- snapshots ------------------------------------------------------------------------------

    def copy(self) -> ImportGraph:
        """A deep copy to put back with :meth:`restore` when a re-import is abandoned."""
        other = ImportGraph()
        with self._lock:
            other._path = dict(self._path)
            other._by_path = dict(self._by_path)
            other._deps = {k: set(v) for k, v in self._deps.items()}
            other._users = {k: set(v) for k, v in self._users.items()}
            other._started = dict(self._started)
            other._children = {k: set(v) for k, v in self._children.items()}
            other._missing = {k: set(v) for k, v in self._missing.items()}
        return other

    def restore(self, other: ImportGraph) -> None:
        with self._lock:
            self._path, self._by_path = dict(other._path), dict(other._by_path)
            self._deps = {k: set(v) for k, v in other._deps.items()}
            self._users = {k: set(v) for k, v in other._users.items()}
            self._started = dict(other._started)
            self._children = {k: set(v) for k, v in other._children.items()}
            self._missing = {k: set(v) for k, v in other._missing.items()}

    # --- queries --------------------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self._deps

    def __len__(self) -> int:
        return len(self._deps)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._deps))

    def path_of(self, name: str) -> Path | None:
        return self._path.get(name)

    def module_for(self, path: Path) -> str | None:
        return self._by_path.get(path)

    def modules_under(self, directory: Path) -> set[str]:
        """Nodes whose file lies under *directory* (a deleted package directory)."""
        return {n for n, p in list(self._path.items()) if p.is_relative_to(directory)}

    def deps(self, name: str) -> frozenset[str]:
        return frozenset(self._deps.get(name, ()))

    def users(self, name: str) -> frozenset[str]:
        return frozenset(self._users.get(name, ()))

    def children(self, package: str) -> frozenset[str]:
        return frozenset(self._children.get(package, ()))

    def importers_of_missing(self, name: str) -> frozenset[str]:
        return frozenset(self._missing.get(name, ()))

    def started(self, name: str) -> int:
        return self._started.get(name, -1)

    def dependents(self, roots: Iterable[str]) -> set[str]:
        """*roots* and every node that (transitively) imports one of them."""
        return self._closure(roots, self._users)

    def dependencies(self, roots: Iterable[str]) -> set[str]:
        """*roots* and every node they (transitively) import."""
        return self._closure(roots, self._deps)

    def _closure(self, roots: Iterable[str], edges: dict[str, set[str]]) -> set[str]:
        seen = {r for r in roots if r in self._deps}
        todo = list(seen)
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def import_order(self, names: Collection[str]) -> list[str]:
        """*names* ordered importees before importers (Tarjan's strongly connected components
        emit a component after every component it reaches). Inside a cycle, members keep the
        order in which they last started executing, so importing the first replays the cycle
        as Python first ran it."""
        members = set(names)
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        order: list[str] = []

        def successors(node: str) -> Iterator[str]:
            return iter(sorted(self._deps.get(node, set()) & members, key=self.started))

        for root in sorted(members, key=self.started):
            if root in index:
                continue
            index[root] = low[root] = len(index)
            stack.append(root)
            on_stack.add(root)
            work = [(root, successors(root))]
            while work:
                node, it = work[-1]
                for nxt in it:
                    if nxt not in index:
                        index[nxt] = low[nxt] = len(index)
                        stack.append(nxt)
                        on_stack.add(nxt)
                        work.append((nxt, successors(nxt)))
                        break
                    if nxt in on_stack:
                        low[node] = min(low[node], index[nxt])
                else:
                    work.pop()
                    if work:
                        parent = work[-1][0]
                        low[parent] = min(low[parent], low[node])
                    if low[node] == index[node]:
                        component: list[str] = []
                        while True:
                            member = stack.pop()
                            on_stack.discard(member)
                            component.append(member)
                            if member == node:
                                break
                        order.extend(sorted(component, key=self.started))
        return order
