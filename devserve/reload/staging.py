"""Staged replacement of project modules: take them out of ``sys.modules``, and put everything
back (entries, parent-package attributes, the import graph) when the new code fails, so the
running generation is untouched and the next attempt starts from a known state."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable

from devserve.reload.graph import ImportGraph

_MISSING = object()


class Staging:
    """One re-import attempt's undo log."""

    def __init__(self, graph: ImportGraph) -> None:
        self._graph = graph
        self._graph_copy = graph.copy()
        self._saved: dict[str, types.ModuleType | None] = {}
        self._parent_attrs: list[tuple[types.ModuleType, str, object]] = []

    def take(self, names: Iterable[str]) -> dict[str, types.ModuleType]:
        """Remove *names* from ``sys.modules`` (and their attribute on a parent package that
        stays); returns the old module objects that were loaded."""
        names = set(names)
        old: dict[str, types.ModuleType] = {}
        for name in names:
            module = sys.modules.pop(name, None)
            self._saved.setdefault(name, module)
            if module is not None:
                old[name] = module
        for name in names:
            parent_name, _, attr = name.rpartition(".")
            parent = sys.modules.get(parent_name) if parent_name else None
            if parent is not None:
                self._parent_attrs.append((parent, attr, vars(parent).get(attr, _MISSING)))
                if isinstance(vars(parent).get(attr), types.ModuleType):
                    delattr(parent, attr)
        return old

    def rollback(self, executed: Iterable[types.ModuleType]) -> None:
        """Drop what the attempt imported, put back what it replaced."""
        for module in executed:
            name = module.__name__
            if sys.modules.get(name) is module:
                del sys.modules[name]
            parent_name, _, attr = name.rpartition(".")
            parent = sys.modules.get(parent_name) if parent_name else None
            if parent is not None and vars(parent).get(attr) is module:
                delattr(parent, attr)
        for name, saved in self._saved.items():
            if saved is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = saved
        for parent, attr, value in reversed(self._parent_attrs):
            if value is _MISSING:
                vars(parent).pop(attr, None)
            else:
                setattr(parent, attr, value)
        self._graph.restore(self._graph_copy)
