"""Which modules are libraries', and importing them into a process template (see :mod:`.template`).

A library module is one of the stdlib or of an installed package (``site-packages``,
``dist-packages``): never project code, as for the reloader's
:class:`~devserve.reload.recorder.ProjectFiles`. Children report the ones they have loaded
(:func:`library_modules`); a template imports them.

Importing this module does nothing more unless ``DEVSERVE_PREWARM`` names a file: only a
template's fork server is started so, with this module in its preload list (after
:mod:`.child`, which brings devserve itself). It then imports each module named in the file, in
order, and:

- refuses any module that is not a library's (a meta-path finder raises ``ImportError``): a
  template never runs project code, so a library that would import the project (Django reading
  ``DJANGO_SETTINGS_MODULE``) fails here and is imported by the worker instead;
- skips a module whose import fails for any reason (one that needs Django's settings does);
  warnings are not shown (the template's stderr is the terminal), the filters libraries set
  stay;
- leaves :data:`warmed` False (the template's probe then fails, so it is never used) when an
  import started a thread: a forked child would not have it;
- freezes what it imported out of the garbage collector's reach, so children share those pages.
"""

from __future__ import annotations

import gc
import importlib
import importlib.abc
import importlib.machinery
import os
import site
import sys
import sysconfig
import threading
import types
import warnings
from collections.abc import Sequence

from devserve.reload.recorder import spec_from_others

ENV = "DEVSERVE_PREWARM"  # the file listing the modules a template imports, one a line

warmed = False  # this process is a template that imported its list


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    dirs.update(getattr(site, "getsitepackages", list)())
    if site.ENABLE_USER_SITE:
        dirs.add(site.getusersitepackages())
    forms = {form for d in dirs for form in (os.path.abspath(d), os.path.realpath(d))}
    return tuple(sorted(form.rstrip(os.sep) + os.sep for form in forms))


LIBRARY_DIRS = _library_dirs()
_MARKERS = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")


def is_library(filename: object) -> bool:
    """A file of the stdlib or of an installed package."""
    return isinstance(filename, str) and (
        filename.startswith(LIBRARY_DIRS) or any(marker in filename for marker in _MARKERS))


def library_modules() -> tuple[str, ...]:
    """The library modules loaded in this process, in the order they were first imported
    (devserve's own are left out: every template has them)."""
    return tuple(
        name for name, module in list(sys.modules.items())
        if not name.startswith(("__", "devserve"))
        and is_library(getattr(module, "__file__", None)))


class _LibrariesOnly(importlib.abc.MetaPathFinder):
    """Asks the other finders; refuses a module whose file is not a library's."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        spec = spec_from_others(lambda f: f is self, fullname, path, target)
        if spec is None:
            return None
        if spec.has_location and not is_library(spec.origin):
            raise ImportError(f"{fullname} is not a library module: not in a template",
                              name=fullname)
        return spec


def import_libraries(names: Sequence[str]) -> bool:
    """Import each of *names* that only libraries' code is needed for; False when that started
    a thread (then this process must not be forked from)."""
    threads = threading.active_count()
    guard = _LibrariesOnly()
    sys.meta_path.insert(0, guard)
    show, warnings.showwarning = warnings.showwarning, _silent  # filters set at import stay
    try:
        for name in names:
            if name in sys.modules:
                continue
            try:
                importlib.import_module(name)
            except BaseException:  # needs the project (or is broken): the worker imports it
                continue
    finally:
        warnings.showwarning = show
        sys.meta_path.remove(guard)
    return threading.active_count() == threads


def _silent(*args: object, **kwargs: object) -> None:
    """Where warnings go while a template imports: its stderr is the terminal."""


def _warm() -> None:
    global warmed
    listing = os.environ.pop(ENV, None)  # the template's children must not see it
    if not listing:
        return
    try:
        with open(listing, encoding="utf-8") as names:
            modules = names.read().split()
        os.unlink(listing)  # read: the Supervisor may be gone before it would remove it
    except OSError:
        return
    warmed = import_libraries(modules)
    gc.collect()
    gc.freeze()


_warm()
