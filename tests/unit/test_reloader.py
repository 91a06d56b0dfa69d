"""How a batch of changed files is classified: the cheapest strategy that can be trusted."""

from __future__ import annotations

from pathlib import Path

import pytest

from devserve.reload.reloader import BROWSER_INCLUDES, strategy_for


@pytest.mark.parametrize(("files", "strategy"), [
    (["static/site.css"], "browser-only"),
    (["static/a.css", "static/b.css"], "browser-only"),
    (["templates/page.html"], "template-only"),
    (["templates/page.jinja2", "static/app.js"], "template-only"),
    (["static/logo.png", "static/site.css"], "template-only"),  # an image reloads the page
    (["app.py"], "reimport"),
    (["app.py", "static/site.css"], "reimport"),
    (["templates/page.html", "views.py"], "reimport"),
    ([".env"], "reimport"),
    (["pyproject.toml"], "reimport"),
    ([], "reimport"),
])
def test_strategy_for(files: list[str], strategy: str) -> None:
    assert strategy_for([Path("/p") / f for f in files]) == strategy


def test_browser_assets_are_watched_only_for_livereload() -> None:
    assert "*.css" in BROWSER_INCLUDES and "*.js" in BROWSER_INCLUDES
    assert "*.py" not in BROWSER_INCLUDES
