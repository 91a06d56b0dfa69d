"""Resolve ``"module:attr"`` to an ASGI 3 callable, with errors that say what is wrong.

Import failures become :class:`AppImportError` with one readable line (and a did-you-mean for
misspelt attributes); the traceback of an exception raised by the user's own module is kept on the
error for the reload display, but never printed for the common mistakes. No import machinery
lives here: re-importing a project is :mod:`devserve.reload.importer`'s job.
"""

from __future__ import annotations

import asyncio
import difflib
import importlib
import inspect
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devserve.asgi.types import ASGIApp, Receive, Scope, Send
from devserve.errors import AppImportError
from devserve.reload.frameworks import serve_static


@dataclass(frozen=True)
class LoadedApp:
    """The callable the workers serve plus what was detected about it."""

    app: ASGIApp
    interface: str  # "asgi3" | "asgi2" | "wsgi" (then ``app`` is the WSGI callable as is)
    source: str  # the import string, or a repr for an app object


def location_of(exc: BaseException) -> str:
    """file:line of the innermost frame of *exc*, or of a SyntaxError's offending line."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        return f"{last.filename}:{last.lineno}"
    return "<unknown>"


_OWN_DIR = str(Path(__file__).resolve().parents[1])  # the devserve package
_IMPORTLIB_DIR = str(Path(importlib.__file__).resolve().parent)


def user_traceback(exc: BaseException) -> str:
    """The traceback without devserve's and importlib's own frames: what the user wrote."""
    tb = traceback.TracebackException.from_exception(exc)
    frames = [
        f for f in tb.stack
        if not f.filename.startswith((_OWN_DIR, "<frozen", _IMPORTLIB_DIR))
    ]
    tb.stack = traceback.StackSummary.from_list(frames)
    return "".join(tb.format())


def describe(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"{type(exc).__name__}: {exc.msg}"
    return f"{type(exc).__name__}: {exc}"


class AppLoadFailure(AppImportError):
    """The user's module raised while importing; carries file:line and a trimmed traceback."""

    def __init__(self, message: str, *, exc: BaseException, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.location = location_of(exc)
        self.traceback_text = user_traceback(exc)
        self.syntax_error = isinstance(exc, SyntaxError)  # the code itself, not its state


def import_failure(module: str, exc: BaseException) -> AppLoadFailure:
    """The error for *module* raising *exc* while it executes: one line with file:line."""
    return AppLoadFailure(
        f"error while importing {module!r}: {describe(exc)} ({location_of(exc)})", exc=exc)


def import_from_string(import_str: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the attribute."""
    module_str, sep, attrs_str = import_str.partition(":")
    if not sep or not module_str or not attrs_str:
        raise AppImportError(
            f"app {import_str!r} must be in the form 'module:attribute'",
            hint="for example: devserve main:app",
        )
    try:
        module = importlib.import_module(module_str)
    except ModuleNotFoundError as exc:
        missing = exc.name
        if missing is not None and (module_str == missing or module_str.startswith(missing + ".")):
            raise AppImportError(
                f"could not import module {module_str!r}: no such module",
                hint="check the name, the working directory, or pass --app-dir",
            ) from None
        raise import_failure(module_str, exc) from None
    except Exception as exc:
        raise import_failure(module_str, exc) from None

    obj: Any = module
    for attr in attrs_str.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            owner = module_str if obj is module else f"{module_str}:{attrs_str}"
            names = [n for n in dir(obj) if not n.startswith("__")]
            close = difflib.get_close_matches(attr, names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else None
            raise AppImportError(
                f"module {owner!r} has no attribute {attr!r}"
                + (f"; {hint}" if hint else ""),
            ) from None
    return obj


def detect_interface(app: Any) -> str:
    """``asgi3`` for ``async def app(scope, receive, send)``; ``asgi2`` for ``app(scope)``;
    ``wsgi`` for a plain ``app(environ, start_response)`` (Flask, Django's WSGIHandler)."""
    if inspect.isclass(app):
        return "asgi2" if not hasattr(app, "__await__") else "asgi3"
    plain = inspect.isfunction(app) or inspect.ismethod(app)
    call = app if plain else getattr(app, "__call__", None)  # noqa: B004
    if call is not None and asyncio.iscoroutinefunction(call):
        return "asgi3"
    try:
        params = [
            p
            for p in inspect.signature(app).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return "asgi3"
    if len(params) == 2:
        return "wsgi"
    return "asgi2" if len(params) == 1 else "asgi3"


def asgi2_to_asgi3(app: Any) -> ASGIApp:
    """Adapt a two-step ASGI 2 app (``app(scope)`` returns ``instance(receive, send)``)."""

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        instance = app(scope)
        await instance(receive, send)

    return wrapper


def add_app_dir(app_dir: str) -> None:
    """Put *app_dir* first on ``sys.path`` (once), as ``--app-dir`` promises."""
    path = str(Path(app_dir).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)


def load_app(app: Any, *, app_dir: str = ".", factory: bool = False,
             interface: str = "auto") -> LoadedApp:
    """Load and normalise the app named in the config into an ASGI 3 callable."""
    source = app if isinstance(app, str) else repr(app)
    if isinstance(app, str):
        add_app_dir(app_dir)
        obj = import_from_string(app)
    else:
        obj = app
    if factory:
        if not callable(obj):
            raise AppImportError(f"--factory: {source!r} is not callable")
        try:
            obj = obj()
        except Exception as exc:
            raise AppLoadFailure(
                f"app factory {source!r} raised {describe(exc)} ({location_of(exc)})",
                exc=exc,
            ) from None
    if not callable(obj):
        raise AppImportError(
            f"{source!r} is not callable (got {type(obj).__name__})",
            hint="point at the ASGI application object, or pass --factory for an app factory",
        )
    kind = detect_interface(obj) if interface == "auto" else interface
    obj = serve_static(obj)  # Django under DEBUG: static files, as runserver serves them
    asgi_app: ASGIApp = asgi2_to_asgi3(obj) if kind == "asgi2" else obj
    return LoadedApp(app=asgi_app, interface=kind, source=source)
