"""Real framework projects written into a temp dir for reload tests: Django (models, admin,
templates, a lazily imported views module), FastAPI (SQLAlchemy models, pydantic schemas, routers in
several modules, Jinja2 templates), Flask (blueprints, templates), and a generated N-module project.

Each builder returns the project root; tests edit real files in it and assert what is *served*."""
