"""FastAPI (SQLAlchemy models, pydantic schemas, routers across modules, Jinja2) and Flask
(blueprints, templates) under ``devserve --reload``: every edit is *served* afterwards, a new module
can be added, and no reload invents an error the user's code does not have."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ServerFactory, ServerProcess
from tests.projects import WATCHING_RE, edit, served
from tests.projects.fastapi_project import make_fastapi_project
from tests.projects.flask_project import make_flask_project


@pytest.fixture(params=["thread", "process"])
def fastapi_server(request: pytest.FixtureRequest, tmp_path: Path,
                   start_server: ServerFactory) -> ServerProcess:
    make_fastapi_project(tmp_path)
    server = start_server("shop.main:app", "--reload", "--worker-mode", request.param,
                          cwd=tmp_path)
    server.wait_for(WATCHING_RE)
    return server


def test_fastapi_router_model_schema_and_template_edits(fastapi_server: ServerProcess,
                                                        tmp_path: Path) -> None:
    served(fastapi_server, "/route", "route-v1")
    # the router object is defined in routers/base.py and decorated in routers/items.py
    edit(tmp_path / "shop/routers/items.py", '"route-v1"', '"route-v2"')
    served(fastapi_server, "/route", "route-v2")
    # models on a Base from the unchanged db.py: no "Table 'items' is already defined"
    edit(tmp_path / "shop/models.py", '"model-v1"', '"model-v2"')
    served(fastapi_server, "/items", "model-v2")
    edit(tmp_path / "shop/schemas.py", '"schema-v1"', '"schema-v2"')
    served(fastapi_server, "/items", "schema-v2")
    # the singleton registry in the unchanged registry.py gets the re-registered value
    edit(tmp_path / "shop/routers/items.py", '"registered-v1"', '"registered-v2"')
    served(fastapi_server, "/route", "registered-v2")
    edit(tmp_path / "shop/templates/page.html", "template-v1", "template-v2")
    served(fastapi_server, "/page", "template-v2 jinja")
    assert "already defined" not in fastapi_server.output


def test_fastapi_new_module_added(fastapi_server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "shop/routers/extra.py").write_text(
        "from shop.routers.base import router\n\n"
        "@router.get('/extra')\ndef extra() -> dict[str, str]:\n    return {'extra': 'new-v1'}\n")
    edit(tmp_path / "shop/main.py", "from shop.routers import items  # noqa: F401",
         "from shop.routers import extra, items  # noqa: F401")
    served(fastapi_server, "/extra", "new-v1")


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_flask_blueprint_and_template_edits(tmp_path: Path, start_server: ServerFactory,
                                            mode: str) -> None:
    make_flask_project(tmp_path)
    server = start_server("site_app.app:app", "--reload", "--worker-mode", mode, cwd=tmp_path)
    server.wait_for(WATCHING_RE)
    served(server, "/", "blog-v1")
    edit(tmp_path / "site_app/blog.py", '"blog-v1"', '"blog-v2"')
    served(server, "/", "blog-v2")
    edit(tmp_path / "site_app/shop.py", '"shop-v1"', '"shop-v2"')
    served(server, "/shop/", "shop-v2")
    served(server, "/page", "template-v1 flask")
    edit(tmp_path / "site_app/templates/page.html", "template-v1", "template-v2")
    served(server, "/page", "template-v2 flask")
