"""A real headless Chromium on a page served with ``--livereload``: the page reloads itself after
an edit (no navigation by the test), shows ``#devserve-error-overlay`` after a failed reload and
drops it once the fix is served.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerFactory, ServerProcess, wait_until
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
