"""import_from_string, detect_interface and load_app against real modules written to tmp_path
(put on sys.path through ``app_dir``, as ``--app-dir`` does)."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devserve.errors import AppImportError
from devserve.reload.importer import (
    AppLoadFailure,
    detect_interface,
    import_from_string,
    load_app,
)

ASGI3_SOURCE = """
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi3"})
"""


@pytest.fixture(autouse=True)
def restore_import_state() -> Iterator[None]:
    """Modules written by a test and app dirs it added do not leak into other tests."""
    path = list(sys.path)
    modules = set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


class Project:
    """A directory of modules with names unique to this test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = f"dsapp_{uuid.uuid4().hex[:10]}"

    def module(self, stem: str, source: str) -> str:
        name = f"{self.prefix}_{stem}"
        (self.root / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    def package(self, stem: str, files: dict[str, str]) -> str:
        name = f"{self.prefix}_{stem}"
        pkg = self.root / name
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        for rel, source in files.items():
            (pkg / rel).write_text(textwrap.dedent(source))
        return name


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def run_http(app: Any) -> list[dict[str, Any]]:
    """Call an ASGI 3 app with an http scope; return what it sent."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    asyncio.run(app(scope, receive, send))
    return sent


# --- import_from_string -----------------------------------------------------------------------


def test_import_module_attribute(project: Project) -> None:
    name = project.module("main", "value = 42\n")
    sys.path.insert(0, str(project.root))
    assert import_from_string(f"{name}:value") == 42


def test_import_nested_attribute_and_submodule(project: Project) -> None:
    pkg = project.package("pkg", {
        "web.py": """
            class Holder:
                class Inner:
                    app = "the-app"
        """,
    })
    sys.path.insert(0, str(project.root))
    assert import_from_string(f"{pkg}.web:Holder.Inner.app") == "the-app"


@pytest.mark.parametrize("bad", ["main", "main:", ":app", ""])
def test_bad_import_string_format(bad: str) -> None:
    with pytest.raises(AppImportError) as info:
        import_from_string(bad)
    assert "module:attribute" in str(info.value)
    assert info.value.exit_code == 3


def test_missing_module_has_a_hint() -> None:
    name = f"no_such_module_{uuid.uuid4().hex}"
    with pytest.raises(AppImportError) as info:
        import_from_string(f"{name}:app")
    err = info.value
    assert not isinstance(err, AppLoadFailure)
    assert name in err.message and "no such module" in err.message
    assert err.hint is not None and "--app-dir" in err.hint


def test_missing_submodule_of_existing_package(project: Project) -> None:
    pkg = project.package("pkg", {})
    sys.path.insert(0, str(project.root))
    with pytest.raises(AppImportError) as info:
        import_from_string(f"{pkg}.missing:app")
    assert not isinstance(info.value, AppLoadFailure)
    assert "no such module" in info.value.message


def test_module_importing_a_missing_dependency_is_a_load_failure(project: Project) -> None:
    dep = f"missing_dep_{uuid.uuid4().hex}"
    name = project.module("main", f"import {dep}\napp = None\n")
    sys.path.insert(0, str(project.root))
    with pytest.raises(AppLoadFailure) as info:
        import_from_string(f"{name}:app")
    err = info.value
    assert dep in err.message  # the *dependency* is named, not the user's module
    assert "no such module" not in err.message
    assert err.location.endswith(f"{name}.py:1")


def test_module_raising_on_import_keeps_location_and_traceback(project: Project) -> None:
    name = project.module("main", """
        x = 1
        raise RuntimeError("config missing")
    """)
    sys.path.insert(0, str(project.root))
    with pytest.raises(AppLoadFailure) as info:
        import_from_string(f"{name}:app")
    err = info.value
    assert "RuntimeError: config missing" in err.message
    assert err.location == f"{project.root / name}.py:3"
    assert "Traceback" in err.traceback_text and "config missing" in err.traceback_text
    assert err.exit_code == 3


def test_syntax_error_location(project: Project) -> None:
    name = project.module("main", "def broken(:\n    pass\n")
    sys.path.insert(0, str(project.root))
    with pytest.raises(AppLoadFailure) as info:
        import_from_string(f"{name}:app")
    assert "SyntaxError" in info.value.message
    assert info.value.location == f"{project.root / name}.py:1"


def test_missing_attribute_suggests_a_close_name(project: Project) -> None:
    name = project.module("main", "application = object()\n")
    sys.path.insert(0, str(project.root))
    with pytest.raises(AppImportError) as info:
        import_from_string(f"{name}:aplication")
    message = info.value.message
    assert "has no attribute 'aplication'" in message
    assert "did you mean 'application'?" in message


def test_missing_attribute_without_close_match(project: Project) -> None:
    name = project.module("main", "application = object()\n")
    sys.path.insert(0, str(project.root))
    with pytest.raises(AppImportError) as info:
        import_from_string(f"{name}:zzz")
    assert "did you mean" not in info.value.message


# --- detect_interface -------------------------------------------------------------------------


async def asgi3_function(scope: Any, receive: Any, send: Any) -> None:
    pass


def asgi2_function(scope: Any) -> Any:
    return None


class ASGI2Class:
    def __init__(self, scope: Any) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        pass


class ASGI3Instance:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        pass


class SyncCallable3:
    def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        return asgi3_function(scope, receive, send)


class Methods:
    async def handler(self, scope: Any, receive: Any, send: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (asgi3_function, "asgi3"),
        (ASGI3Instance(), "asgi3"),
        (Methods().handler, "asgi3"),
        (SyncCallable3(), "asgi3"),
        (asgi2_function, "asgi2"),
        (ASGI2Class, "asgi2"),
        (lambda scope: None, "asgi2"),
    ],
)
def test_detect_interface(app: Any, expected: str) -> None:
    assert detect_interface(app) == expected


# --- load_app ---------------------------------------------------------------------------------


def test_load_app_via_app_dir(project: Project) -> None:
    name = project.module("main", ASGI3_SOURCE)
    loaded = load_app(f"{name}:app", app_dir=str(project.root))
    assert loaded.interface == "asgi3"
    assert loaded.source == f"{name}:app"
    assert str(project.root.resolve()) == sys.path[0]
    assert run_http(loaded.app)[1]["body"] == b"asgi3"


def test_app_dir_added_once(project: Project) -> None:
    name = project.module("main", ASGI3_SOURCE)
    load_app(f"{name}:app", app_dir=str(project.root))
    load_app(f"{name}:app", app_dir=str(project.root))
    assert sys.path.count(str(project.root.resolve())) == 1


def test_load_factory(project: Project) -> None:
    name = project.module("main", """
        CALLS = []

        def create_app():
            CALLS.append(1)

            async def app(scope, receive, send):
                await send({"type": "http.response.start", "status": 204, "headers": []})
                await send({"type": "http.response.body", "body": b""})
            return app
    """)
    loaded = load_app(f"{name}:create_app", app_dir=str(project.root), factory=True)
    assert sys.modules[name].CALLS == [1]
    assert run_http(loaded.app)[0]["status"] == 204


def test_factory_raising_is_a_load_failure(project: Project) -> None:
    name = project.module("main", """
        def create_app():
            raise ValueError("no settings")
    """)
    with pytest.raises(AppLoadFailure) as info:
        load_app(f"{name}:create_app", app_dir=str(project.root), factory=True)
    assert "ValueError: no settings" in info.value.message
    assert info.value.location.endswith(f"{name}.py:3")


def test_factory_that_is_not_callable(project: Project) -> None:
    name = project.module("main", "create_app = 3\n")
    with pytest.raises(AppImportError) as info:
        load_app(f"{name}:create_app", app_dir=str(project.root), factory=True)
    assert "--factory" in info.value.message


def test_non_callable_app_has_a_hint(project: Project) -> None:
    name = project.module("main", "app = {'not': 'an app'}\n")
    with pytest.raises(AppImportError) as info:
        load_app(f"{name}:app", app_dir=str(project.root))
    assert "is not callable (got dict)" in info.value.message
    assert info.value.hint is not None and "--factory" in info.value.hint


def test_asgi2_app_is_adapted(project: Project) -> None:
    name = project.module("main", """
        class App:
            def __init__(self, scope):
                self.scope = scope

            async def __call__(self, receive, send):
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": self.scope["path"].encode()})
    """)
    loaded = load_app(f"{name}:App", app_dir=str(project.root))
    assert loaded.interface == "asgi2"
    assert run_http(loaded.app)[1]["body"] == b"/"


def test_interface_override(project: Project) -> None:
    name = project.module("main", ASGI3_SOURCE)
    loaded = load_app(f"{name}:app", app_dir=str(project.root), interface="asgi3")
    assert loaded.interface == "asgi3"


def test_app_object_is_used_as_is() -> None:
    loaded = load_app(asgi3_function)
    assert loaded.app is asgi3_function
    assert loaded.interface == "asgi3"
    assert "asgi3_function" in loaded.source


def test_missing_module_through_load_app(tmp_path: Path) -> None:
    with pytest.raises(AppImportError) as info:
        load_app(f"nothing_here_{uuid.uuid4().hex}:app", app_dir=str(tmp_path))
    assert "no such module" in info.value.message
