"""Import the app and re-import it after edits, re-executing only what the edits affect.

API (the Supervisor/server use these; everything else here is an implementation detail)::

    importer = ProjectImporter("pkg.main:app", dirs=[root], app_dir=".", factory=False,
                               interface="auto")
    loaded = importer.load()                       # first import, import graph recorded
    outcome = importer.reload({Path("pkg/views.py")})
    outcome.loaded        # LoadedApp, the app re-resolved from its (maybe re-executed) module
    outcome.strategy      # "partial" | "wider" | "full"
    outcome.reexecuted    # module names executed, in order
    outcome.reason        # why it was "wider" or "full", else None
    importer.close()                               # stop recording (uninstall the hooks)

    reimport_app(app, dirs=..., ...)   # stateless full re-import (what server.py calls today)
    load_app_fresh(app, dirs=..., ...) # first import compiling project files from source

How :meth:`ProjectImporter.reload` decides (cheapest first, never stale):

- **partial**: the changed files that are modules in the graph, plus every project module that
  (transitively) imports one, are taken out of ``sys.modules`` and imported again, importees
  first (inside an import cycle in the order Python first ran it, so cycles such as Flask's
  ``app/__init__`` <-> ``app/routes`` replay faithfully). Everything else stays loaded, the same
  module objects. Changed files are compiled from source; re-executed unchanged ones reuse their
  cached code. A package re-executes like any module; its unchanged submodules are re-attached.
  Modules a framework imported lazily (no project importer) are imported again eagerly, so their
  errors show before the new generation is promoted.
- **wider**: the partial set plus the modules owning state the affected ones write into (see
  :mod:`devserve.reload.widen`): the module defining a SQLAlchemy ``Base`` the edited models are
  declared on (known up front), or a router/blueprint/registry/class attribute in an unchanged
  module that the attempt wrote into (found after it, which is then undone and redone wider; the
  owners are remembered for the next edit of the same file). A failed partial attempt that used
  objects of unchanged modules is retried once wider (Flask refuses ``@bp.route`` on a blueprint
  already registered) unless it was a SyntaxError.
- **full**: every project module is re-imported when no trustworthy graph exists (``changed`` is
  None, the first load failed or was not recorded) or when a changed file is a project module
  loaded before recording began (the graph cannot know its importers), or when a wider attempt
  still wrote into unchanged modules.

A changed file that is no module in the graph (never imported, a template) re-executes nothing,
unless an import of that name once failed (a file created later). A deleted module is dropped and
its importers re-execute. Any failure restores the previous ``sys.modules`` entries, parent-package
attributes, graph and written-to containers, raises :class:`AppLoadFailure` with file:line, and
the failed batch's files are carried into the next reload.

Module-level singletons: an unchanged module's dict/list registry that an edited module writes
into is rebuilt (its module re-executes, so do all modules registering into it): stale entries of
deleted handlers cannot survive. State in *library* modules (SQLModel's global ``MetaData``,
Django's app registry) cannot be rebuilt in process: those need a fresh process.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import types
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devserve.errors import DevserveError
from devserve.reload.frameworks import before_reimport, duplicate_declaration, fresh_process_reason
from devserve.reload.graph import ImportGraph
from devserve.reload.recorder import ImportRecorder, ProjectFiles
from devserve.reload.resolve import (
    AppLoadFailure,
    LoadedApp,
    add_app_dir,
    asgi2_to_asgi3,
    detect_interface,
    import_failure,
    import_from_string,
    load_app,
    user_traceback,
)
from devserve.reload.staging import Staging
from devserve.reload.widen import SharedState, declarative_owners, suspects

__all__ = [
    "AppLoadFailure", "FreshProcessNeeded", "LoadedApp", "ProjectImporter", "ReloadOutcome",
    "add_app_dir", "asgi2_to_asgi3", "detect_interface", "import_from_string", "load_app",
    "load_app_fresh", "reimport_app", "user_traceback",
]


@dataclass(frozen=True)
class ReloadOutcome:
    """What a reload did: the app to serve, and how it got there (for the dashboard and log)."""

    loaded: LoadedApp
    strategy: str  # "partial" | "wider" | "full"
    reexecuted: tuple[str, ...]
    reason: str | None = None


class FreshProcessNeeded(DevserveError):
    """The edit cannot be taken in this process (a framework registry, a library-level
    declaration): serve it from a fresh one. Nothing was re-executed, or it was all undone.
    *modules*: the project modules loaded now, which a fresh process should import before it
    is trusted (lazily imported ones included, so their errors show first)."""

    def __init__(self, message: str, modules: Collection[str] = ()) -> None:
        super().__init__(message)
        self.modules = tuple(modules)


class _Written(Exception):
    """An attempt succeeded but wrote into modules outside it: redo it with them."""

    def __init__(self, owners: dict[str, str]) -> None:
        super().__init__(owners)
        self.owners = owners


class ProjectImporter:
    """Loads one app and keeps its project's import graph to re-import only what edits affect."""

    def __init__(self, app: str, *, dirs: Sequence[Path], app_dir: str = ".",
                 factory: bool = False, interface: str = "auto") -> None:
        self.app = app
        self.app_dir = app_dir
        self.factory = factory
        self.interface = interface
        self.files = ProjectFiles(dirs)
        self.graph = ImportGraph()
        self.recorder = ImportRecorder(self.files, self.graph)
        self._lock = threading.Lock()
        self._trusted = False  # the graph describes what is loaded
        self._pending: set[Path] = set()  # files of failed reloads, not applied yet
        self._learned: dict[str, set[str]] = {}  # module -> owners it writes into

    def __enter__(self) -> ProjectImporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.recorder.uninstall()

    def _load(self) -> LoadedApp:
        return load_app(self.app, app_dir=self.app_dir, factory=self.factory,
                        interface=self.interface)

    def load(self, preload: Collection[str] = (), *, fresh: bool = False) -> LoadedApp:
        """First import, with recording on (it stays on for lazy imports until :meth:`close`),
        then the *preload* modules (a deleted one is skipped). *fresh*: compile every project
        module from source (a process serving an edit must not trust a ``.pyc`` written in the
        same second)."""
        with self._lock:
            self.recorder.install()
            self._trusted = False
            self.recorder.fresh = None if fresh else set()
            try:
                loaded = self._load()
                for name in preload:
                    if name not in sys.modules and _exists(name):
                        _import(name)
            finally:
                self.recorder.fresh = set()
            self._trusted = True
            return loaded

    def reload(self, changed: Collection[Path] | None) -> ReloadOutcome:
        """Re-import after *changed* files (None: everything); see the module docstring."""
        with self._lock:
            self.recorder.install()
            importlib.invalidate_caches()
            if changed is None:
                return self._guard(None, lambda: self._full(None, "full re-import requested"))
            paths = {_absolute(p) for p in changed} | self._pending
            if not self._trusted:
                return self._guard(paths, lambda: self._full(
                    paths, "no import graph yet (the app was not loaded by this importer)"))
            return self._guard(paths, lambda: self._partial(paths))

    def _guard(self, paths: set[Path] | None, attempt: Callable[[], ReloadOutcome]
               ) -> ReloadOutcome:
        try:
            outcome = attempt()
        except AppLoadFailure as exc:
            if paths is not None:
                self._pending = set(paths)
            if duplicate_declaration(exc.message):
                raise FreshProcessNeeded(
                    f"a declaration cannot be executed twice in one process ({exc.message})",
                    self._loaded_names()) from None
            raise
        except BaseException:
            if paths is not None:
                self._pending = set(paths)
            raise
        self._pending.clear()
        self._trusted = True
        return outcome

    # --- planning -------------------------------------------------------------------------------

    def _plan(self, paths: set[Path]) -> tuple[set[str], set[str], str | None]:
        """Roots to re-execute, modules to drop, or the reason to re-import everything."""
        roots: set[str] = set()
        deleted: set[str] = set()
        loaded_files: dict[str, str] | None = None
        for path in paths:
            aliases = self.files.aliases(path)
            names = {n for p in aliases if (n := self.graph.module_for(p)) is not None}
            if names:
                (roots if path.exists() else deleted).update(names)
                continue
            if not path.exists():
                for alias in aliases:
                    deleted |= self.graph.modules_under(alias)
                continue
            if str(path) not in self.files:
                continue
            if loaded_files is None:
                loaded_files = {getattr(m, "__file__", ""): n
                                for n, m in self.files.loaded_modules().items()}
            for alias in aliases:
                if str(alias) in loaded_files:
                    return set(), set(), (f"{loaded_files[str(alias)]} was loaded before the "
                                          "import graph was recorded")
                for name in _module_names(alias):
                    # "import pkg.mod" failing on a missing "pkg" was noted as "pkg"
                    parts = name.split(".")
                    for depth in range(1, len(parts) + 1):
                        roots |= self.graph.importers_of_missing(".".join(parts[:depth]))
        for name in deleted:
            roots |= self.graph.users(name)
        return roots - deleted, deleted, None

    def _loaded_names(self) -> list[str]:
        """Loaded project modules, in the order they first ran."""
        return sorted(self.files.loaded_modules(), key=self.graph.started)

    def _holders(self, affected: set[str]) -> dict[str, types.ModuleType]:
        """Loaded, unaffected project modules that the affected ones import directly."""
        names = {d for a in affected for d in self.graph.deps(a)} - affected
        return {n: m for n in names if (m := sys.modules.get(n)) is not None}

    # --- strategies -----------------------------------------------------------------------------

    def _partial(self, paths: set[Path]) -> ReloadOutcome:
        roots, deleted, full_reason = self._plan(paths)
        if full_reason is not None:
            return self._full(paths, full_reason)
        edited = set(roots)
        reasons: dict[str, str] = {}
        for root in edited:
            for owner in self._learned.get(root, ()):
                if owner in self.graph:
                    roots.add(owner)
                    reasons.setdefault(owner, f"{owner} re-executed with {root} last time")
        affected = self.graph.dependents(roots) - deleted
        owners = declarative_owners(
            [m for n in affected if (m := sys.modules.get(n)) is not None],
            lambda name: [m for n in self.graph.dependencies([name]) - affected
                          if (m := sys.modules.get(n)) is not None])
        for owner, why in owners.items():
            roots.add(owner)
            reasons.setdefault(owner, why)
        widened: dict[str, str] = {}  # found by a first attempt: remembered once one succeeds
        while True:
            affected = self.graph.dependents(roots) - deleted
            reason = "; ".join(sorted(set(reasons.values()))) or None
            try:
                loaded, executed = self._attempt(affected, deleted, paths)
            except _Written as written:
                if widened:
                    return self._full(paths, f"{reason}; still writing into "
                                             f"{', '.join(sorted(written.owners))}")
                widened = written.owners
            except _Suspected as suspected:
                if widened:
                    raise suspected.error from None
                widened = suspected.owners
            else:
                for root in edited:
                    self._learned.setdefault(root, set()).update(widened)
                return ReloadOutcome(loaded, "wider" if reasons else "partial", executed, reason)
            roots |= set(widened)
            for owner, why in widened.items():
                reasons.setdefault(owner, why)

    def _attempt(self, affected: set[str], deleted: set[str], fresh: set[Path]
                 ) -> tuple[LoadedApp, tuple[str, ...]]:
        """Re-execute *affected* (importees first), drop *deleted*; all or nothing."""
        reason = fresh_process_reason(fresh, affected | deleted)
        if reason is not None:
            raise FreshProcessNeeded(reason, self._loaded_names())
        order = self.graph.import_order(affected)
        holders = self._holders(affected | deleted)
        shared = SharedState(holders)
        staging = Staging(self.graph)
        old = staging.take(affected | deleted)
        for name in deleted:
            self.graph.remove(name)
        executed: list[types.ModuleType] = []
        finish = before_reimport(affected | deleted)
        try:
            with self._recording(fresh, executed):
                for name in order:
                    if name not in sys.modules and name not in deleted:
                        _import(name)
                loaded = self._load()
        except BaseException as exc:
            owners = {} if isinstance(exc, KeyboardInterrupt) else \
                suspects([*old.values(), *executed], holders)
            shared.restore()
            staging.rollback(executed)
            finish(False)
            if owners and isinstance(exc, AppLoadFailure) and not exc.syntax_error:
                raise _Suspected(exc, owners) from exc
            raise
        written = {k: v for k, v in shared.mutated().items() if k not in affected}
        if written:
            shared.restore()
            staging.rollback(executed)
            finish(False)
            raise _Written(written)
        finish(True)
        return loaded, tuple(m.__name__ for m in executed)

    def _full(self, paths: set[Path] | None, reason: str) -> ReloadOutcome:
        """Re-import every project module; those the previous generation had loaded lazily are
        imported again too, so their errors show now."""
        known = [n for n in self.graph if (p := self.graph.path_of(n)) is not None
                 and p.exists()]
        known.sort(key=self.graph.started)
        loaded_before = self.files.loaded_modules()
        why = fresh_process_reason(paths or (), loaded_before)
        if why is not None:
            raise FreshProcessNeeded(why, self._loaded_names())
        staging = Staging(self.graph)
        staging.take(loaded_before)
        self.graph.clear()
        executed: list[types.ModuleType] = []
        finish = before_reimport(loaded_before)
        try:
            with self._recording(paths, executed):
                loaded = self._load()
                for name in known:
                    if name not in sys.modules:
                        _import(name)
        except BaseException:
            staging.rollback([*executed, *self.files.loaded_modules().values()])
            finish(False)
            raise
        finish(True)
        return ReloadOutcome(loaded, "full", tuple(m.__name__ for m in executed), reason)

    def _recording(self, fresh: set[Path] | None, executed: list[types.ModuleType]
                   ) -> _Recording:
        if fresh is not None:
            fresh = {alias for path in fresh for alias in self.files.aliases(path)}
        return _Recording(self.recorder, fresh, executed)


class _Suspected(Exception):
    """A failed attempt used objects of unchanged modules: retry once with them."""

    def __init__(self, error: BaseException, owners: dict[str, str]) -> None:
        super().__init__(error)
        self.error = error
        self.owners = owners


class _Recording:
    """Recorder settings for one attempt: which files are fresh, and who executed."""

    def __init__(self, recorder: ImportRecorder, fresh: set[Path] | None,
                 executed: list[types.ModuleType]) -> None:
        self.recorder, self.fresh, self.executed = recorder, fresh, executed

    def __enter__(self) -> None:
        self.recorder.fresh = None if self.fresh is None else {str(p) for p in self.fresh}
        self.recorder.reloading = True
        self.recorder.executed = self.executed

    def __exit__(self, *exc: object) -> None:
        self.recorder.fresh = set()
        self.recorder.reloading = False
        self.recorder.executed = None


def _import(name: str) -> None:
    try:
        importlib.import_module(name)
    except Exception as exc:
        raise import_failure(name, exc) from None


def _exists(name: str) -> bool:
    """Whether module *name* can still be found (its file was not deleted since)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _module_names(path: Path) -> Iterable[str]:
    """The names *path* would be imported under, from the ``sys.path`` entries above it."""
    for entry in sys.path:
        base = Path(os.path.abspath(entry or "."))
        if path.is_relative_to(base):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts and parts[-1] == "__init__":
                parts.pop()
            if parts and all(p.isidentifier() for p in parts):
                yield ".".join(parts)


def load_app_fresh(app: str, *, dirs: list[Path], app_dir: str = ".", factory: bool = False,
                   interface: str = "auto", preload: Collection[str] = ()) -> LoadedApp:
    """Import the app compiling project modules from source (a reloaded process worker could
    otherwise load a stale ``.pyc`` written in the same second), then the *preload* modules
    (those the previous generation had loaded; a deleted one is skipped)."""
    recorder = ImportRecorder(ProjectFiles(dirs), ImportGraph())
    recorder.install()
    try:
        with _Recording(recorder, None, []):
            loaded = load_app(app, app_dir=app_dir, factory=factory, interface=interface)
            for name in preload:
                if name not in sys.modules and _exists(name):
                    _import(name)
            return loaded
    finally:
        recorder.uninstall()


def reimport_app(app: str, *, dirs: list[Path], app_dir: str = ".", factory: bool = False,
                 interface: str = "auto") -> LoadedApp:
    """Staged full re-import: every project module is imported fresh; on *any* failure the
    previous modules are put back so the running generation is untouched. ``.pyc`` files are
    left alone. Stateless: it is :meth:`ProjectImporter.reload` with ``changed=None``."""
    with ProjectImporter(app, dirs=dirs, app_dir=app_dir, factory=factory,
                         interface=interface) as importer:
        return importer.reload(None).loaded
