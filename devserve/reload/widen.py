"""When re-executing the affected modules alone is not enough: state they put into modules that
stay loaded. The answer is always a *wider* re-import (re-execute the module owning the state
too, so it is built afresh), never surgery on library internals.

- Declarative registries that refuse a second declaration: a SQLAlchemy model re-declared on a
  ``Base``/``MetaData`` from an unchanged module raises "Table 'x' is already defined for this
  MetaData instance". Found before anything runs by :func:`declarative_owners` (duck-typed: no
  SQLAlchemy import), so the module defining ``Base`` re-executes with the models.
- Registration into objects of unchanged modules: a router or blueprint decorated in the edited
  module, a dict registry it fills, ``Plugin.registry`` appended to by ``__init_subclass__``.
  :class:`SharedState` snapshots (shallowly) the containers reachable from the globals of the
  unchanged modules the affected ones import, compares them after the attempt, and puts them back
  when the attempt is abandoned, so the running generation keeps its state. (A request of the
  running generation writing into the same container during the attempt's few milliseconds
  looks the same: it widens the re-import, and an abandoned attempt undoes that write too.)
- A failed attempt that used an object (not a module, function or plain value) of an unchanged
  module, e.g. Flask refusing ``@bp.route`` on an already registered blueprint: that module is a
  suspect, see :func:`suspects`; the attempt is retried once with it.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

_PLAIN = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset, range,
          types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
Container = list[Any] | dict[Any, Any] | set[Any]
_MISSING = object()


def _is_object(value: Any) -> bool:
    """Something that can hold registration state (an instance or a class)."""
    return not isinstance(value, _PLAIN)


def _globals(module: types.ModuleType) -> Iterator[tuple[str, Any]]:
    for key, value in list(vars(module).items()):
        if not (key.startswith("__") and key.endswith("__")):
            yield key, value


def _attributes(obj: Any) -> Iterator[Any]:
    try:
        values = list(vars(obj).values())
    except TypeError:
        return
    yield from values


class SharedState:
    """Shallow snapshots of what unchanged modules hold, to detect and undo writes into them."""

    def __init__(self, holders: Mapping[str, types.ModuleType]) -> None:
        self._globals: list[tuple[str, types.ModuleType, dict[str, Any]]] = []
        self._containers: dict[int, tuple[Container, Container, set[str]]] = {}
        for name, module in holders.items():
            self._globals.append(
                (name, module, {k: v for k, v in _globals(module)
                                if not isinstance(v, types.ModuleType)}))
            for _, value in _globals(module):
                self._take(name, value)
                if _is_object(value):
                    for attr in _attributes(value):
                        self._take(name, attr)

    def _take(self, holder: str, value: Any) -> None:
        if not isinstance(value, (list, dict, set)):
            return
        entry = self._containers.get(id(value))
        if entry is None:
            self._containers[id(value)] = (value, _copy(value), {holder})
        else:
            entry[2].add(holder)

    def mutated(self) -> dict[str, str]:
        """Holder module -> what was written into it since the snapshot."""
        found: dict[str, str] = {}
        for name, module, saved in self._globals:
            now = {k: v for k, v in _globals(module) if not isinstance(v, types.ModuleType)}
            if now.keys() != saved.keys() or any(now[k] is not saved[k] for k in saved):
                changed = sorted(k for k in now.keys() | saved.keys()
                                 if now.get(k, _MISSING) is not saved.get(k, _MISSING))
                found.setdefault(name, f"globals {', '.join(changed[:3])} of {name} were set")
        for current, saved_copy, holders in self._containers.values():
            if not _same(current, saved_copy):
                for holder in holders:
                    found.setdefault(holder, f"a {type(current).__name__} held by {holder} "
                                             "was written to")
        return found

    def restore(self) -> None:
        """Put every snapshotted container and global back as it was."""
        for current, saved_copy, _ in self._containers.values():
            if _same(current, saved_copy):
                continue
            # The base methods: subclasses (read-only facades) may refuse their own.
            if isinstance(current, list):
                list.__setitem__(current, slice(None), saved_copy)
            elif isinstance(current, dict):
                dict.clear(current)
                dict.update(current, saved_copy)
            else:
                set.clear(current)
                set.update(current, saved_copy)
        for _, module, saved in self._globals:
            namespace = vars(module)
            for key, value in _globals(module):
                if key not in saved and not isinstance(value, types.ModuleType):
                    del namespace[key]
            namespace.update(saved)


def _copy(value: Container) -> Container:
    if isinstance(value, list):
        return list(value)
    return dict(value) if isinstance(value, dict) else set(value)


def _same(current: Container, saved: Container) -> bool:
    if len(current) != len(saved):
        return False
    if isinstance(current, list):
        return all(a is b for a, b in zip(current, saved, strict=True))
    if isinstance(current, dict):
        assert isinstance(saved, dict)
        return current.keys() == saved.keys() and all(current[k] is saved[k] for k in saved)
    return {id(x) for x in current} == {id(x) for x in saved}


def _declarative_markers(module: types.ModuleType) -> list[Any]:
    """The ``Base`` classes and ``MetaData`` objects the models of *module* are declared on."""
    markers: list[Any] = []
    for _, value in _globals(module):
        if isinstance(value, type) and value.__module__ == module.__name__ \
                and "__table__" in vars(value):
            markers.extend(base for base in value.__mro__[1:]
                           if "metadata" in vars(base) or "registry" in vars(base))
            metadata = getattr(vars(value)["__table__"], "metadata", None)
            if metadata is not None:
                markers.append(metadata)
        elif type(value).__name__ == "Table" and \
                type(value).__module__.startswith("sqlalchemy"):
            markers.append(value.metadata)
    return markers


def declarative_owners(affected: Iterable[types.ModuleType],
                       holders_of: Callable[[str], Iterable[types.ModuleType]]
                       ) -> dict[str, str]:
    """Unchanged modules owning the declarative base (or metadata) that models in *affected*
    are declared on: module name -> why. *holders_of(name)* yields the unchanged project modules
    that *name* (transitively) imports; a holder has the marker in its globals, directly or as
    an attribute of an object there (Flask-SQLAlchemy's ``db.Model``)."""
    owners: dict[str, str] = {}
    for module in affected:
        markers = {id(m) for m in _declarative_markers(module)}
        if not markers:
            continue
        for holder in holders_of(module.__name__):
            if holder.__name__ in owners:
                continue
            for _, value in _globals(holder):
                inner = list(_attributes(value)) if _is_object(value) and \
                    not isinstance(value, type) else []
                if id(value) in markers or any(id(v) in markers for v in inner):
                    owners[holder.__name__] = (
                        f"{module.__name__} declares models on {holder.__name__}'s registry")
                    break
    return owners


def suspects(affected: Iterable[types.ModuleType],
             holders: Mapping[str, types.ModuleType]) -> dict[str, str]:
    """Unchanged *holders* whose objects (instances or classes) the *affected* modules use."""
    used = {id(v): key for m in affected for key, v in _globals(m) if _is_object(v)}
    found: dict[str, str] = {}
    for name, holder in holders.items():
        for key, value in _globals(holder):
            if id(value) in used and _is_object(value):
                found[name] = f"{name}.{key} is used by a re-executed module"
                break
    return found
