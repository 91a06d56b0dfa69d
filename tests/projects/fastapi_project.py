"""A FastAPI project laid out the way real ones are: SQLAlchemy 2 models on a ``Base`` declared in
an unchanged module, pydantic schemas, routers in several modules (one router object defined in
one module and decorated in another), a module-level singleton, Jinja2 templates, sqlite."""

from __future__ import annotations

from pathlib import Path

from tests.projects import write_files

FILES: dict[str, str] = {
    "shop/__init__.py": "",
    "shop/db.py": '''
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, sessionmaker

class Base(DeclarativeBase):
    pass

engine = create_engine("sqlite:///./shop.sqlite3")
Session = sessionmaker(engine)
''',
    "shop/models.py": '''
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column
from shop.db import Base

class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))

    def label(self) -> str:
        return "model-v1"
''',
    "shop/schemas.py": '''
from pydantic import BaseModel

class ItemOut(BaseModel):
    name: str
    note: str = "schema-v1"
''',
    "shop/registry.py": '''
HANDLERS: dict[str, str] = {}
''',
    "shop/routers/__init__.py": "",
    "shop/routers/base.py": '''
from fastapi import APIRouter
router = APIRouter()
''',
    "shop/routers/items.py": '''
from shop.models import Item
from shop.registry import HANDLERS
from shop.routers.base import router
from shop.schemas import ItemOut

HANDLERS["items"] = "registered-v1"

@router.get("/items")
def items() -> ItemOut:
    return ItemOut(name=Item(name="x").label())

@router.get("/route")
def route() -> dict[str, str]:
    return {"route": "route-v1", "registry": HANDLERS["items"]}
''',
    "shop/pages.py": '''
from pathlib import Path
from fastapi import APIRouter, Request
from fastapi.templating import Jinja2Templates

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
pages = APIRouter()

@pages.get("/page")
def page(request: Request):
    return templates.TemplateResponse(request, "page.html", {"who": "jinja"})
''',
    "shop/templates/page.html": "<html><body><p>template-v1 {{ who }}</p></body></html>\n",
    "shop/main.py": '''
from fastapi import FastAPI
from shop.db import Base, engine
from shop.pages import pages
from shop.routers import items  # noqa: F401  (decorates the shared router)
from shop.routers.base import router

Base.metadata.create_all(engine)
app = FastAPI()
app.include_router(router)
app.include_router(pages)
''',
}


def make_fastapi_project(root: Path) -> Path:
    """Write the project under *root*; serve it with ``shop.main:app``."""
    return write_files(root, FILES)
