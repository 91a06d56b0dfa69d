"""A Flask app with two blueprints in their own modules and a Jinja2 template (WSGI, served by
devserve's sync workers)."""

from __future__ import annotations

from pathlib import Path

from tests.projects import write_files

FILES: dict[str, str] = {
    "site_app/__init__.py": "",
    "site_app/app.py": '''
from flask import Flask
from site_app.blog import blog
from site_app.shop import shop

app = Flask(__name__)
app.register_blueprint(blog)
app.register_blueprint(shop, url_prefix="/shop")
''',
    "site_app/blog.py": '''
from flask import Blueprint, render_template
blog = Blueprint("blog", __name__)

@blog.get("/")
def index():
    return "blog-v1"

@blog.get("/page")
def page():
    return render_template("page.html", who="flask")
''',
    "site_app/shop.py": '''
from flask import Blueprint
shop = Blueprint("shop", __name__)

@shop.get("/")
def index():
    return "shop-v1"
''',
    "site_app/templates/page.html": "<html><body><p>template-v1 {{ who }}</p></body></html>\n",
}


def make_flask_project(root: Path) -> Path:
    """Write the project under *root*; serve it with ``site_app.app:app``."""
    return write_files(root, FILES)
