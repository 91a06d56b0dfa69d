"""Record the project's import graph while project modules execute, and hand them their code.

- A meta-path finder asks the other finders for each spec and, for a project module (a plain
  source file under the watched dirs, outside site-packages/dist-packages and outside devserve),
  swaps in a :class:`ProjectLoader`. The loader keeps a per-thread stack of executing project
  modules: a project module first imported while another one runs (``importlib.import_module``
  from a framework acting for it, Django's ``include("app.urls")``) becomes its dependency.
- A ``builtins.__import__`` hook records every import *statement* of a project module, also for
  modules already loaded (those never reach a finder) and for lazy imports at request time:
  ``import a.b`` depends on ``a`` and ``a.b``; ``from a import b`` on ``a`` and, if it is a
  module, ``a.b``; relative imports resolved. An import that finds no module is remembered, so a
  file created later can re-execute its importer. Costs one dict lookup per statement outside
  the project.
- After a module executes, its globals are scanned for project modules, functions and classes it
  picked up some other way (``importlib.import_module`` of a loaded module, re-exports).

Code objects are cached per file keyed by ``(mtime_ns, size)``: an unchanged module re-executed
because a dependency changed reuses its code (one ``stat``, no read). Files marked fresh, and
during a reload every file without a cache entry, are compiled from source: a ``.pyc`` is keyed
on whole-second mtime and could be stale. ``.pyc`` files are never written nor deleted here.
"""

from __future__ import annotations

import builtins
import importlib.abc
import importlib.machinery
import os
import sys
import threading
import types
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from devserve.reload.graph import ImportGraph
from devserve.reload.watcher import read_whole

_OWN_DIR = str(Path(__file__).resolve().parents[1]) + os.sep  # devserve itself
_THIRD_PARTY = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")


class ProjectFiles:
    """Which files are the project's: under one of *dirs*, not third-party, not devserve."""

    def __init__(self, dirs: Iterable[Path]) -> None:
        forms = {form for d in dirs for form in (os.path.abspath(d), str(Path(d).resolve()))}
        self.prefixes = tuple(form.rstrip(os.sep) + os.sep for form in forms)
        self._verdicts: dict[str, bool] = {}

    def __contains__(self, filename: object) -> bool:
        if not isinstance(filename, str) or not filename.endswith(".py"):
            return False
        verdict = self._verdicts.get(filename)
        if verdict is None:
            verdict = self._verdicts[filename] = self._judge(filename)
        return verdict

    def aliases(self, path: Path) -> list[Path]:
        """*path* spelt under each form of its dir (as given, resolved): a watcher may report
        ``/private/tmp/x.py`` for a module imported as ``/tmp/x.py``."""
        text = str(path)
        found = [path]
        for prefix in self.prefixes:
            if text.startswith(prefix):
                rest = text[len(prefix):]
                found += [Path(other + rest) for other in self.prefixes if other != prefix]
        return found

    def _judge(self, filename: str) -> bool:
        """By prefix, the dirs both as given and resolved (no ``realpath()`` per file: costly)."""
        return filename.startswith(self.prefixes) and not (
            filename.startswith(_OWN_DIR) or any(part in filename for part in _THIRD_PARTY))

    def loaded_modules(self) -> dict[str, types.ModuleType]:
        """The project modules in ``sys.modules`` now, by name."""
        return {
            name: module for name, module in list(sys.modules.items())
            if name != "__main__" and module is not None
            and getattr(module, "__file__", None) in self
        }


def spec_from_others(skip: Callable[[object], bool], fullname: str,
                     path: Sequence[str] | None, target: types.ModuleType | None
                     ) -> importlib.machinery.ModuleSpec | None:
    """What the meta-path finders that *skip* does not reject make of *fullname* (for a finder
    that wraps the others)."""
    for finder in list(sys.meta_path):
        find = getattr(finder, "find_spec", None)
        if find is None or skip(finder):
            continue
        spec: importlib.machinery.ModuleSpec | None = find(fullname, path, target)
        if spec is not None:
            return spec
    return None


class ProjectLoader(importlib.machinery.SourceFileLoader):
    """A source loader that tells its recorder when a project module starts and ends."""

    def __init__(self, fullname: str, path: str, recorder: ImportRecorder) -> None:
        super().__init__(fullname, path)
        self.recorder = recorder

    def get_code(self, fullname: str) -> Any:
        return self.recorder.code_for(self, fullname)

    def exec_module(self, module: types.ModuleType) -> None:
        recorder = self.recorder
        if not recorder.active:
            super().exec_module(module)
            return
        recorder.started(module, Path(self.path))
        ok = False
        try:
            super().exec_module(module)
            ok = True
        finally:
            recorder.finished(module, ok)


class _Finder(importlib.abc.MetaPathFinder):
    """Asks the other finders; gives project source modules a :class:`ProjectLoader`."""

    def __init__(self, recorder: ImportRecorder) -> None:
        self.recorder = recorder

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not self.recorder.active:
            return None
        spec = spec_from_others(lambda f: isinstance(f, _Finder), fullname, path, target)
        if spec is None:
            return None
        origin = spec.origin
        plain = type(spec.loader) is importlib.machinery.SourceFileLoader
        if plain and origin is not None and origin in self.recorder.files:
            spec.loader = ProjectLoader(fullname, origin, self.recorder)
        return spec


ImportFunc = Callable[..., types.ModuleType]


class ImportRecorder:
    """Fills an :class:`ImportGraph` while installed; see the module docstring for how."""

    def __init__(self, files: ProjectFiles, graph: ImportGraph) -> None:
        self.files = files
        self.graph = graph
        self.active = False
        self.fresh: set[str] | None = set()  # paths compiled from source; None: every file
        self.reloading = False  # no cache entry -> compile from source rather than trust a .pyc
        self.executed: list[types.ModuleType] | None = None  # collected during a transaction
        self._code: dict[str, tuple[tuple[int, int], types.CodeType]] = {}
        self._local = threading.local()
        self._finder = _Finder(self)
        self._previous_import: ImportFunc | None = None

    # --- installation ---------------------------------------------------------------------------

    def install(self) -> None:
        if self.active:
            return
        self.active = True
        sys.meta_path.insert(0, self._finder)
        self._previous_import = builtins.__import__
        builtins.__import__ = self._import

    def uninstall(self) -> None:
        """Stop recording. A hook installed after ours stays in place; ours then just passes
        calls through to the one it wrapped."""
        if not self.active:
            return
        self.active = False
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        if builtins.__import__ == self._import and self._previous_import is not None:
            builtins.__import__ = self._previous_import

    def changed_files(self) -> list[Path]:
        """Project files executed here that changed (or vanished) since they were read."""
        changed = []
        for path, (stamp, _) in list(self._code.items()):
            try:
                st = os.stat(path)
            except OSError:
                changed.append(Path(path))
                continue
            if (st.st_mtime_ns, st.st_size) != stamp:
                changed.append(Path(path))
        return changed

    # --- code -----------------------------------------------------------------------------------

    def code_for(self, loader: ProjectLoader, fullname: str) -> Any:
        path = loader.path
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size)
        fresh = self.fresh is None or path in self.fresh
        cached = self._code.get(path)
        if cached is not None and cached[0] == stamp and not fresh:
            return cached[1]
        if fresh or self.reloading or (
                code := importlib.machinery.SourceFileLoader.get_code(loader, fullname)) is None:
            code = loader.source_to_code(read_whole(path), path)
        self._code[path] = (stamp, code)
        return code

    # --- execution ------------------------------------------------------------------------------

    def _stack(self) -> list[str]:
        stack: list[str] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def started(self, module: types.ModuleType, path: Path) -> None:
        name = module.__name__
        self.graph.add_node(name, path)
        stack = self._stack()
        if stack:
            self.graph.add_edge(stack[-1], name)
        stack.append(name)
        if self.executed is not None:
            self.executed.append(module)
        if self.reloading:
            self._attach_children(module)

    def finished(self, module: types.ModuleType, ok: bool) -> None:
        self._stack().pop()
        if not ok:
            return
        name = module.__name__
        for value in list(vars(module).values()):
            if isinstance(value, types.ModuleType):
                self.graph.add_edge(name, value.__name__)
            elif isinstance(value, (types.FunctionType, type)):
                owner = getattr(value, "__module__", None)
                if isinstance(owner, str):
                    self.graph.add_edge(name, owner)
        if self.reloading:
            self._attach_children(module)

    def _attach_children(self, package: types.ModuleType) -> None:
        """A re-executed package gets its loaded submodules back as attributes (the old package
        object had them), before its code runs and again after, as their imports once did."""
        if not hasattr(package, "__path__"):
            return
        for child in self.graph.children(package.__name__):
            loaded = sys.modules.get(child)
            attr = child.rpartition(".")[2]
            current = getattr(package, attr, None)
            if loaded is not None and (current is None or isinstance(current, types.ModuleType)):
                setattr(package, attr, loaded)

    # --- the import statement hook -------------------------------------------------------------

    def _import(self, name: str, globals: Any = None, locals: Any = None,
                fromlist: Sequence[str] | None = (), level: int = 0) -> types.ModuleType:
        previous = self._previous_import
        assert previous is not None
        importer = globals.get("__name__") if type(globals) is dict else None
        if not self.active or not isinstance(importer, str) or importer not in self.graph:
            return previous(name, globals, locals, fromlist, level)
        try:
            result = previous(name, globals, locals, fromlist, level)
        except ModuleNotFoundError as exc:
            if exc.name:
                self.graph.note_missing(importer, exc.name)
            raise
        target = _resolve(name, globals, level)
        if target is not None:
            add = self.graph.add_edge
            if fromlist:
                add(importer, target)
                for item in fromlist:
                    if item != "*":
                        add(importer, f"{target}.{item}")
            else:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    add(importer, ".".join(parts[:i]))
        return result


def _resolve(name: str, globals: dict[str, Any], level: int) -> str | None:
    """The absolute module name of ``from <level dots><name> import ...`` in *globals*."""
    if not level:
        return name
    package = globals.get("__package__")
    if not package:
        spec = globals.get("__spec__")
        package = getattr(spec, "parent", None)
    if not isinstance(package, str) or not package:
        return None
    bits = package.rsplit(".", level - 1)
    if len(bits) < level:
        return None
    return f"{bits[0]}.{name}" if name else bits[0]
