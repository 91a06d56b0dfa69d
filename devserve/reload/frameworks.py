"""Framework adapters: what a framework keeps outside the project's modules, and which edits it
cannot take in place.

A partial re-import replaces project modules in ``sys.modules``, but frameworks hold on to the old
objects in their own registries and caches. Without help, the old code keeps answering after a
"successful" reload. What each framework needs:

- **Django.** The URL resolver is ``lru_cache``d with the old urlconf module (and so the old views):
  cleared after every re-import. The admin site refuses a second registration of a model, so the
  registrations made by modules about to be re-executed are taken out first (and put back if the
  re-import fails). The app registry, model classes, settings and migrations cannot be replaced in a
  running process: an edit to ``models``, ``apps.py``, the settings module or a ``migrations``
  directory asks for a fresh process. Template loaders cache compiled templates: reset on a template
  edit. Like ``manage.py runserver`` with ``DEBUG = True``, static files are served
  (``ASGIStaticFilesHandler``) so the admin is styled.
- **Jinja2 / Flask.** An ``Environment`` with ``auto_reload`` checks template mtimes by itself;
  Flask's does not unless debugging, so its template cache is cleared on a template edit.

Frameworks are optional: nothing here imports one that the app has not imported already.
Imports: the standard library only (and the frameworks, when loaded).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

TEMPLATE_SUFFIXES = frozenset({".html", ".htm", ".jinja", ".jinja2", ".j2", ".txt", ".xml",
                               ".svg", ".email"})


def _django_ready() -> bool:
    apps_module = sys.modules.get("django.apps")
    return apps_module is not None and bool(apps_module.apps.ready)


def _module_file(name: str) -> Path | None:
    module = sys.modules.get(name)
    filename = getattr(module, "__file__", None)
    return Path(filename).resolve() if filename else None


def fresh_process_expected() -> bool:
    """Whether edits to this project often need a fresh process (Django's models, settings)."""
    return _django_ready()


def fresh_process_reason(changed: Collection[Path], modules: Collection[str]) -> str | None:
    """Why re-executing *modules* after *changed* cannot be trusted in place (``None`` when it
    can): Django's settings, app configurations, models and migrations live in registries that
    only a fresh process rebuilds."""
    if not _django_ready():
        return None
    from django.apps import apps
    from django.conf import settings

    touched = {p.resolve() for p in changed}
    touched |= {f for name in modules if (f := _module_file(name)) is not None}
    settings_file = _module_file(settings.SETTINGS_MODULE)
    if settings_file is not None and settings_file in touched:
        return f"Django settings changed ({settings_file.name})"
    for config in apps.get_app_configs():
        app_dir = Path(config.path).resolve()
        if "site-packages" in app_dir.parts or "dist-packages" in app_dir.parts:
            continue
        models = config.models_module
        models_file = _module_file(models.__name__) if models is not None else None
        config_file = _module_file(type(config).__module__)
        for path in touched:
            if models_file is not None and (path == models_file or (
                    models_file.name == "__init__.py" and path.is_relative_to(
                        models_file.parent))):
                return f"Django models changed in app {config.label!r} ({path.name})"
            if config_file is not None and path == config_file:
                return f"Django app configuration changed ({config.label}: {path.name})"
            if path.is_relative_to(app_dir / "migrations"):
                return f"Django migrations changed in app {config.label!r}"
    return None


# Errors a library raises when a declaration is executed twice in one process: the user's code
# is fine, the process is not fresh. (SQLAlchemy/SQLModel MetaData, Django's app registry.)
DUPLICATE_DECLARATIONS = (
    "is already defined for this MetaData instance",
    "Conflicting '",
    "was already registered. Reloading models is not advised",
)


def duplicate_declaration(message: str) -> bool:
    """Whether an import error only says that something was declared twice in this process."""
    return any(marker in message for marker in DUPLICATE_DECLARATIONS)


def before_reimport(modules: Collection[str]) -> Callable[[bool], None]:
    """Prepare framework registries for re-executing *modules*; the returned callable finishes
    the job: ``finish(True)`` after a successful re-import (caches cleared), ``finish(False)``
    after a failed one (registries as they were)."""
    if not _django_ready():
        return _nothing
    from django.contrib import admin
    from django.urls import clear_url_caches

    names = set(modules)
    registry: dict[Any, Any] = admin.site._registry if "django.contrib.admin" in sys.modules \
        else {}
    taken = {model: model_admin for model, model_admin in registry.items()
             if type(model_admin).__module__ in names}
    for model in taken:
        del registry[model]

    def finish(ok: bool) -> None:
        if ok:
            clear_url_caches()
            return
        for model, model_admin in taken.items():
            registry.setdefault(model, model_admin)

    return finish


def _nothing(ok: bool) -> None:
    return None


def is_template(path: Path) -> bool:
    """A file that template engines read at request time (no Python re-import needed)."""
    return path.suffix.lower() in TEMPLATE_SUFFIXES and "static" not in path.parts


def drop_template_caches(app: object) -> None:
    """Forget compiled templates so the next request renders the edited file."""
    if _django_ready():
        from django.template.autoreload import reset_loaders

        reset_loaders()
    for env in _jinja_environments(app):
        cache = getattr(env, "cache", None)
        if cache is not None:
            cache.clear()


def _jinja_environments(app: object) -> list[Any]:
    """Jinja2 environments reachable from the served app (Flask's ``jinja_env``), following
    middleware wrappers through their ``app`` attribute."""
    found: list[Any] = []
    seen: set[int] = set()
    current: Any = app
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        env = getattr(current, "__dict__", {}).get("jinja_env") or _flask_env(current)
        if env is not None:
            found.append(env)
        current = getattr(current, "app", None)
    return found


def _flask_env(obj: object) -> Any:
    flask = sys.modules.get("flask")
    if flask is not None and isinstance(obj, flask.Flask):
        return obj.jinja_env
    return None


def serve_static(app: Any) -> Any:
    """Django under ``DEBUG`` with ``django.contrib.staticfiles``: serve ``STATIC_URL`` like
    ``manage.py runserver`` does; any other app is returned as it is."""
    if not _django_ready():
        return app
    from django.conf import settings

    if not settings.DEBUG or "django.contrib.staticfiles" not in settings.INSTALLED_APPS:
        return app
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler, StaticFilesHandler
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler

    if isinstance(app, ASGIHandler):
        return ASGIStaticFilesHandler(app)
    if isinstance(app, WSGIHandler):
        return StaticFilesHandler(app)
    return app

