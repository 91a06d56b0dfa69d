"""A real headless Chromium on a page served with ``--livereload``: the page reloads itself after
an edit (no navigation by the test), shows ``#devserve-error-overlay`` after a failed reload and
drops it once the fix is served. On a Starlette + Jinja2 site with StaticFiles: a stylesheet edit
is swapped into the open page without reloading it, a template edit reloads the page with the new
text and a script edit reloads it running the new script, both without a new generation.

The browser is driven over the Chrome DevTools Protocol with a minimal client built on the
``websockets`` library. Chromium is required: CI installs it, so a missing binary is a failure
with instructions, never a skip."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import READY_RE, ServerFactory, ServerProcess, wait_until
from websockets.sync.client import ClientConnection, connect

CHROMIUM = os.environ.get("DEVSERVE_CHROMIUM", "/usr/bin/chromium")
START_TIMEOUT = 30.0
WAIT = 15.0


def page_app(message: str) -> str:
    return textwrap.dedent(f"""
        MESSAGE = {message!r}

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            if scope["path"] != "/":
                await send({{"type": "http.response.start", "status": 404, "headers": []}})
                await send({{"type": "http.response.body", "body": b""}})
                return
            page = ("<!doctype html><html><head><title>devserve e2e</title></head><body>"
                    "<p id='msg'>" + MESSAGE + "</p></body></html>").encode()
            await send({{"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(page)).encode())]}})
            await send({{"type": "http.response.body", "body": page}})
    """)


# --- a minimal CDP client -------------------------------------------------------------------------


class CDP:
    """Request/response over one DevTools websocket; events in between are ignored."""

    def __init__(self, ws_url: str) -> None:
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(ws_url, max_size=None, open_timeout=WAIT))
        self._next_id = 0

    def close(self) -> None:
        self._stack.close()

    def call(self, method: str, params: dict[str, Any] | None = None,
             timeout: float = WAIT) -> dict[str, Any]:
        self._next_id += 1
        msg_id = self._next_id
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no CDP answer to {method} within {timeout}s")
            message = json.loads(self.ws.recv(timeout=remaining))
            if message.get("id") != msg_id:
                continue  # an event
            if "error" in message:
                raise AssertionError(f"CDP {method} failed: {message['error']}")
            result: dict[str, Any] = message["result"]
            return result

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression,
                                                "returnByValue": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"JS error in {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, expected: Any, timeout: float = WAIT,
                 what: str = "") -> float:
        """Poll a JS expression (every 20 ms) until it equals *expected*; returns seconds."""
        start = time.monotonic()
        last: list[Any] = [None]

        def matches() -> bool:
            try:
                last[0] = self.evaluate(expression)
            except AssertionError as exc:  # the page is mid-navigation: try again
                last[0] = str(exc)
            return bool(last[0] == expected)

        wait_until(matches, timeout, what or expression, interval=0.02,
                   detail=lambda: f"expected {expected!r}, last {last[0]!r}")
        return time.monotonic() - start


class Browser:
    """Headless Chromium on a DevTools port chosen by the kernel (read from DevToolsActivePort)."""

    def __init__(self, profile: Path) -> None:
        if not Path(CHROMIUM).exists():
            pytest.fail(
                f"Chromium not found at {CHROMIUM}: this end-to-end test needs a real browser. "
                "Install it (Debian/Ubuntu: `apt-get install chromium`) or point "
                "DEVSERVE_CHROMIUM at a Chromium/Chrome binary.", pytrace=False)
        profile.mkdir()
        self.profile = profile
        self.log_path = profile.parent / "chromium.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-proxy-server", f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its helper processes share a group we can clean up
        )
        self.port = self._devtools_port()
        self.cdp = CDP(self._page_ws_url())

    def _devtools_port(self) -> int:
        marker = self.profile / "DevToolsActivePort"

        def port() -> int | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self.proc.returncode}:\n"
                                     f"{self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                return int(marker.read_text().splitlines()[0])
            except (OSError, IndexError, ValueError):
                return None

        found = wait_until(port, START_TIMEOUT, "DevToolsActivePort", interval=0.05,
                           detail=lambda: self.log_path.read_text(errors="replace")[-3000:])
        assert found is not None
        return found

    def _page_ws_url(self) -> str:
        def page_url() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list",
                                        timeout=WAIT) as r:
                targets = json.load(r)
            pages = [t for t in targets if t.get("type") == "page"]
            return str(pages[0]["webSocketDebuggerUrl"]) if pages else ""

        return wait_until(page_url, START_TIMEOUT, "a page target listed by chromium",
                          interval=0.05)

    def close(self) -> None:
        try:
            self.cdp.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "chrome-profile")
    try:
        yield b
    finally:
        b.close()


MSG = "document.getElementById('msg') ? document.getElementById('msg').textContent : null"
OVERLAY = ("document.getElementById('devserve-error-overlay') ? "
           "document.getElementById('devserve-error-overlay').textContent : null")
HAS_OVERLAY = "document.getElementById('devserve-error-overlay') !== null"
MARKER = "window.__devserveTestMarker === undefined ? null : window.__devserveTestMarker"


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_page_reloads_itself_and_shows_error_overlay(
        tmp_path: Path, start_server: ServerFactory, browser: Browser, mode: str) -> None:
    project = tmp_path / "project"
    project.mkdir()
    app = project / "app.py"
    app.write_text(page_app("version one"))
    server: ServerProcess = start_server("app:app", "--reload", "--livereload",
                                         "--worker-mode", mode, cwd=project)
    server.wait_for(r"Watching for changes in \d+ director", WAIT)
    cdp = browser.cdp
    cdp.call("Page.navigate", {"url": server.url + "/"})
    cdp.wait_for(MSG, "version one", what="initial page")
    # The live-reload script is in the page and its EventSource is connected (the server
    # logs the stream request when access logging is on; here we check the DOM side).
    assert cdp.evaluate(
        "document.querySelector('script[data-generation]').getAttribute('data-generation')"
    ) == "1"
    cdp.evaluate("window.__devserveTestMarker = 'same page'")

    # 1. An edit: the page reloads itself (the marker disappears) and shows the new text.
    app.write_text(page_app("version two"))
    took = cdp.wait_for(MSG, "version two", what="page after the edit")
    assert cdp.evaluate(MARKER) is None, "the text changed without a page reload?"
    print(f"\n[browser/{mode}] edit visible in the page after {took * 1000:.0f} ms")
    # Well inside the default --reload-grace (5 s): the page must follow the new generation as
    # soon as it serves, not when the old one is finally forced closed.
    assert took < 3.0, f"the page took {took:.1f}s to reload"
    assert cdp.evaluate(HAS_OVERLAY) is False

    # 2. A syntax error: the overlay appears with the error and file:line; the page stays.
    cdp.evaluate("window.__devserveTestMarker = 'before the error'")
    broken = page_app("version two").replace("MESSAGE = 'version two'", "MESSAGE = 'broken")
    line_no = broken.splitlines().index("MESSAGE = 'broken") + 1
    app.write_text(broken)
    cdp.wait_for(HAS_OVERLAY, True, what="error overlay after the syntax error")
    text = cdp.evaluate(OVERLAY)
    assert "devserve: reload failed" in text, text
    assert "SyntaxError" in text, text
    assert f"app.py:{line_no}" in text, text
    assert cdp.evaluate(MSG) == "version two"  # the old generation's page is still there
    assert cdp.evaluate(MARKER) == "before the error"  # and it did not reload

    # 3. The fix: the page reloads into the new generation, without the overlay.
    app.write_text(page_app("version three"))
    cdp.wait_for(MSG, "version three", what="page after the fix")
    cdp.wait_for(HAS_OVERLAY, False, what="overlay gone after the fix")
    assert cdp.evaluate(MARKER) is None
    server.wait_for(r"Reloaded: generation 3 ready", WAIT)


# --- non-Python files: stylesheets swapped in place, templates and scripts reload the page -------

SITE_APP = textwrap.dedent("""
    from starlette.applications import Starlette
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
    from starlette.templating import Jinja2Templates

    templates = Jinja2Templates(directory="templates")


    async def index(request):
        return templates.TemplateResponse(request, "index.html", {"title": "devserve e2e"})


    app = Starlette(routes=[
        Route("/", index),
        Mount("/static", StaticFiles(directory="static"), name="static"),
    ])
""")

SITE_TEMPLATE = """<!doctype html>
<html><head><title>{{ title }}</title>
<link rel="stylesheet" href="/static/site.css">
<script src="/static/site.js"></script>
</head><body>
<p id="msg">MESSAGE</p>
<script>window.__marker = Math.random();</script>
</body></html>
"""

# Runs before the page's own scripts: records when an EventSource got the hub's "hello" (the
# page's live-reload stream is subscribed from then on). The stream itself is the page's own.
HELLO_SPY = """
(() => {
  const Native = window.EventSource;
  window.__devserveHello = false;
  window.EventSource = function (url, init) {
    const source = new Native(url, init);
    source.addEventListener("hello", () => { window.__devserveHello = true; });
    return source;
  };
  window.EventSource.prototype = Native.prototype;
})();
"""
HELLO_SEEN = "window.__devserveHello === true"
MSG_COLOR = ("document.getElementById('msg') ? "
             "getComputedStyle(document.getElementById('msg')).color : null")
PAGE_MARKER = "window.__marker === undefined ? null : window.__marker"
SCRIPT_VERSION = "window.__siteScript === undefined ? null : window.__siteScript"


def site_css(color: str) -> str:
    return f"#msg {{ color: {color}; }}\n"


def site_js(version: str) -> str:
    return f"window.__siteScript = {version!r};\n"


def site_template(message: str) -> str:
    return SITE_TEMPLATE.replace("MESSAGE", message)


class Site:
    """A Starlette project in a temp dir: a Jinja2 page with a stylesheet and a script from
    StaticFiles, served by ``devserve --reload --livereload``, open in the browser."""

    def __init__(self, root: Path, start_server: ServerFactory, browser: Browser,
                 mode: str) -> None:
        root.mkdir()
        (root / "static").mkdir()
        (root / "templates").mkdir()
        (root / "app.py").write_text(SITE_APP)
        self.css = root / "static" / "site.css"
        self.js = root / "static" / "site.js"
        self.template = root / "templates" / "index.html"
        self.css.write_text(site_css("rgb(255, 0, 0)"))
        self.js.write_text(site_js("script one"))
        self.template.write_text(site_template("template one"))
        day_ago = time.time() - 86400  # files as a project has them: not all written just now,
        for path in (self.css, self.js, self.template):  # so HTTP caches would call them fresh
            os.utime(path, (day_ago, day_ago))
        self.server: ServerProcess = start_server(
            "app:app", "--reload", "--livereload", "--worker-mode", mode, cwd=root)
        self.server.wait_for(r"Watching for changes in \d+ director", WAIT)
        self.cdp = browser.cdp
        self.cdp.call("Page.enable")  # scripts to evaluate on new documents need it
        self.cdp.call("Page.addScriptToEvaluateOnNewDocument", {"source": HELLO_SPY})
        self.cdp.call("Page.navigate", {"url": self.server.url + "/"})
        self.cdp.wait_for(MSG, "template one", what="initial page")
        self.cdp.wait_for(MSG_COLOR, "rgb(255, 0, 0)", what="initial stylesheet")
        # Edit only once the page listens: the hub sends "hello" on a stream it has subscribed.
        self.cdp.wait_for(HELLO_SEEN, True, what="the live-reload stream's hello")
        self.marker = self.cdp.evaluate(PAGE_MARKER)
        assert isinstance(self.marker, float), self.marker

    def refreshed(self, strategy: str, start: int) -> None:
        """The edit was served as *strategy*, without a new generation."""
        self.server.wait_for(rf"Refreshed without a new generation \({strategy}", WAIT,
                             start=start)
        new_generations = [line for line in self.server.lines[start:] if READY_RE.search(line)]
        assert new_generations == [], self.server.output


@pytest.fixture
def site_factory(tmp_path: Path, start_server: ServerFactory,
                 browser: Browser) -> Callable[[str], Site]:
    return lambda mode: Site(tmp_path / "site", start_server, browser, mode)


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_css_edit_swaps_the_stylesheet_without_reloading_the_page(
        site_factory: Callable[[str], Site], mode: str) -> None:
    site = site_factory(mode)
    cdp = site.cdp
    mark = len(site.server.lines)
    site.css.write_text(site_css("rgb(0, 0, 255)"))
    took = cdp.wait_for(MSG_COLOR, "rgb(0, 0, 255)", what="the new stylesheet applied")
    assert cdp.evaluate(PAGE_MARKER) == site.marker, "the page reloaded for a CSS edit"
    assert cdp.evaluate(
        "document.querySelectorAll('link[rel~=\"stylesheet\"]').length") == 1
    site.refreshed("browser-only", mark)
    print(f"\n[browser/{mode}] stylesheet swapped after {took * 1000:.0f} ms, no page reload")

    # A second edit swaps the swapped link again (its href now carries a cache-busting query).
    site.css.write_text(site_css("rgb(0, 128, 0)"))
    cdp.wait_for(MSG_COLOR, "rgb(0, 128, 0)", what="the second stylesheet edit applied")
    assert cdp.evaluate(PAGE_MARKER) == site.marker
    assert cdp.evaluate(MSG) == "template one"


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_template_edit_reloads_the_page_without_a_new_generation(
        site_factory: Callable[[str], Site], mode: str) -> None:
    site = site_factory(mode)
    cdp = site.cdp
    mark = len(site.server.lines)
    site.template.write_text(site_template("template two"))
    took = cdp.wait_for(MSG, "template two", what="the edited template in the page")
    marker = cdp.evaluate(PAGE_MARKER)
    assert marker is not None and marker != site.marker, "the text changed without a reload?"
    site.refreshed("template-only", mark)
    assert cdp.evaluate(HAS_OVERLAY) is False
    print(f"\n[browser/{mode}] template edit visible after {took * 1000:.0f} ms, "
          "same generation")


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_script_edit_reloads_the_page(site_factory: Callable[[str], Site], mode: str) -> None:
    site = site_factory(mode)
    cdp = site.cdp
    assert cdp.evaluate(SCRIPT_VERSION) == "script one"
    mark = len(site.server.lines)
    site.js.write_text(site_js("script two"))
    took = cdp.wait_for(SCRIPT_VERSION, "script two", what="the edited script running")
    marker = cdp.evaluate(PAGE_MARKER)
    assert marker is not None and marker != site.marker, "the script changed without a reload?"
    assert cdp.evaluate(MSG) == "template one"
    site.refreshed("template-only", mark)
    print(f"\n[browser/{mode}] script edit running after {took * 1000:.0f} ms")
