"""Django under ``devserve --reload``: every kind of edit is *served* afterwards — views, urls,
templates, admin, models and settings (those two in a fresh process) — broken code keeps the
previous generation serving, and static files are served as ``runserver`` does under DEBUG."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory, ServerProcess, descendants, wait_until
from tests.projects import DEADLINE, WATCHING_RE, edit, served
from tests.projects.django_project import make_django_project

APP = "mysite.asgi:application"


@pytest.fixture(params=["thread", "process"])
def django_server(request: pytest.FixtureRequest, tmp_path: Path,
                  start_server: ServerFactory) -> ServerProcess:
    make_django_project(tmp_path)
    server = start_server(APP, "--reload", "--worker-mode", request.param, cwd=tmp_path)
    server.wait_for(WATCHING_RE)
    return server


def test_view_url_and_template_edits_are_served(django_server: ServerProcess,
                                                tmp_path: Path) -> None:
    served(django_server, "/", "view-v1")
    edit(tmp_path / "polls/views.py", "view-v1", "view-v2")
    served(django_server, "/", "view-v2")

    edit(tmp_path / "polls/urls.py", 'path("", views.index),',
         'path("", views.index), path("added", views.index),')
    served(django_server, "/added", "view-v2")

    served(django_server, "/page", "template-v1")
    edit(tmp_path / "polls/templates/polls/page.html", "template-v1", "template-v2")
    served(django_server, "/page", "template-v2 template")


def test_admin_edit_is_served_without_already_registered(django_server: ServerProcess,
                                                         tmp_path: Path) -> None:
    served(django_server, "/admin/login/", "Django administration")
    edit(tmp_path / "polls/admin.py", "from .models import Question",
         "from .models import Question\nadmin.site.site_header = 'header-v2'")
    served(django_server, "/admin/login/", "header-v2")
    assert "AlreadyRegistered" not in django_server.output


def test_model_and_settings_edits_are_served(django_server: ServerProcess,
                                             tmp_path: Path) -> None:
    served(django_server, "/model", "model-v1")
    edit(tmp_path / "polls/models.py", "model-v1", "model-v2")
    served(django_server, "/model", "model-v2")

    served(django_server, "/greeting", "settings-v1")
    edit(tmp_path / "mysite/settings.py", "settings-v1", "settings-v2")
    served(django_server, "/greeting", "settings-v2")
    # A server that handed over exits right after the new one got the socket: it is reaped
    # at once, but it may be the fraction of a millisecond behind the first answer.
    pid = django_server.proc.pid
    wait_until(lambda: _zombies(pid) == [], 5.0, "no children nobody waits for",
               detail=lambda: str(_zombies(pid)))


def _zombies(pid: int) -> list[int]:
    """Children of *pid* that exited and were never reaped."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children
            if Path(f"/proc/{c}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"]


def test_static_files_are_served_under_debug(django_server: ServerProcess) -> None:
    response = httpx.get(django_server.url + "/static/admin/css/base.css", timeout=5.0)
    assert response.status_code == 200
    assert "text/css" in response.headers["content-type"]


def test_syntax_error_in_lazily_imported_view_keeps_previous_generation(
        django_server: ServerProcess, tmp_path: Path) -> None:
    # The URLconf is loaded (without /lazy), so only a generation started after the edits
    # below answers /lazy: the lazy module is imported by the generation that serves it.
    served(django_server, "/", "view-v1")
    (tmp_path / "polls/lazy.py").write_text("def text():\n    return 'lazy-v1'\n")
    edit(tmp_path / "polls/views.py", "def index(request):",
         "def lazy(request):\n    from .lazy import text\n    return HttpResponse(text())\n"
         "def index(request):")
    edit(tmp_path / "polls/urls.py", 'path("", views.index),',
         'path("", views.index), path("lazy", views.lazy),')
    served(django_server, "/lazy", "lazy-v1")  # polls.lazy is now imported, at request time

    start = len(django_server.lines)
    (tmp_path / "polls/lazy.py").write_text("def text(:\n    return 'lazy-v2'\n")
    failure = django_server.wait_for(r"Reload failed|SyntaxError", DEADLINE, start=start)
    assert failure is not None
    django_server.wait_for(re.escape(str(Path("polls") / "lazy.py")) + r":1", DEADLINE,
                           start=start)
    response = httpx.get(django_server.url + "/lazy", timeout=5.0)
    assert (response.status_code, response.text) == (200, "lazy-v1")

    (tmp_path / "polls/lazy.py").write_text("def text():\n    return 'lazy-v3'\n")
    served(django_server, "/lazy", "lazy-v3")


def test_broken_model_edit_keeps_previous_generation_and_process(django_server: ServerProcess,
                                                                 tmp_path: Path) -> None:
    """A models edit goes to a fresh process; a broken one is caught by the fresh-process check
    (thread mode) or the new generation (process mode): the same process keeps serving the old
    code, the error names file:line, and the fix is served."""
    served(django_server, "/model", "model-v1")
    start = len(django_server.lines)
    edit(tmp_path / "polls/models.py", '"model-v1"', '"model-v2" +')
    django_server.wait_for(r"Reload failed", DEADLINE, start=start)
    django_server.wait_for(re.escape(str(Path("polls") / "models.py")) + r":\d+", DEADLINE,
                           start=start)
    response = httpx.get(django_server.url + "/model", timeout=5.0)
    assert (response.status_code, response.text) == (200, "model-v1")
    assert django_server.proc.poll() is None
    assert not any("Restarting in a fresh process" in line
                   for line in django_server.lines[start:])

    edit(tmp_path / "polls/models.py", '"model-v2" +', '"model-v3"')
    served(django_server, "/model", "model-v3")


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@pytest.mark.parametrize("standby", [True, False], ids=["standby", "check-then-exec"])
def test_model_edits_in_thread_mode_hand_over_under_one_relay(
        tmp_path: Path, start_server: ServerFactory, standby: bool) -> None:
    """Thread mode: every models edit is served by a fresh process — a standby that imported it
    while the old server served (the process started becomes one small relay however many
    hand-overs follow), or, with pre-warmed processes off, a check then an ``exec`` of the same
    process. Views are still re-imported in place afterwards, and a SIGTERM to the process the
    developer started stops everything with status 0."""
    make_django_project(tmp_path)
    env = {} if standby else {"DEVSERVE_NO_TEMPLATE": "1"}
    server = start_server(APP, "--reload", "--worker-mode", "thread", cwd=tmp_path, env=env)
    server.wait_for(WATCHING_RE)
    pid = server.proc.pid
    seen = {pid}
    for n in (2, 3):
        start = len(server.lines)
        edit(tmp_path / "polls/models.py", f"model-v{n - 1}", f"model-v{n}")
        served(server, "/model", f"model-v{n}")
        server.wait_for(WATCHING_RE, DEADLINE, start=start)  # the new server watches
        seen |= descendants(pid)
    if standby:
        assert "relay.py" in _cmdline(pid)

        def one_server_under_the_relay() -> bool:
            # A server that handed over may take a moment to be reaped (its threads exit).
            children = [int(c) for c in
                        Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            live = [c for c in children if c not in _zombies(pid)]
            return len(live) == 1 and "devserve" in _cmdline(live[0])

        wait_until(one_server_under_the_relay, 5.0, "one server under the relay",
                   detail=lambda: str([_cmdline(c) for c in descendants(pid)]))
        assert not any("relay.py" in _cmdline(c) for c in descendants(pid)), "a relay chain"
    else:
        assert "relay.py" not in _cmdline(pid)
    start = len(server.lines)
    edit(tmp_path / "polls/views.py", "view-v1", "view-v2")
    served(server, "/", "view-v2")
    server.wait_for(r"Reloaded: .*partial", DEADLINE, start=start)
    served(server, "/model", "model-v3")

    assert server.stop() == 0
    left = [p for p in seen if Path(f"/proc/{p}").exists()
            and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    assert left == [], f"still running after the stop: {[_cmdline(p) for p in left]}"


def test_a_killed_standby_is_replaced_when_a_model_edit_needs_one(
        tmp_path: Path, start_server: ServerFactory) -> None:
    """Thread mode keeps a standby for a Django project; one that died meanwhile (OOM killer,
    a stray ``kill``) is replaced at the next models edit, which is served, not reported."""
    make_django_project(tmp_path)
    server = start_server(APP, "--reload", "--worker-mode", "thread", cwd=tmp_path)
    server.wait_for(WATCHING_RE)
    pid = server.proc.pid
    standby = wait_until(lambda: [c for c in descendants(pid) if "devserve" in _cmdline(c)],
                         DEADLINE, "a standby process")[0]
    os.kill(standby, signal.SIGKILL)
    start = len(server.lines)
    edit(tmp_path / "polls/models.py", "model-v1", "model-v2")
    served(server, "/model", "model-v2")
    assert not any("Reload failed" in line for line in server.lines[start:])


def test_a_file_saved_while_the_standby_takes_over_is_served(
        tmp_path: Path, start_server: ServerFactory) -> None:
    """The standby imports the project before its own watcher runs; the server it replaces
    stops reloading once it hands over. A file saved in between (the second file of a "save
    all", a formatter's rewrite) is still served: the new server reloads what changed since
    it read it. Deterministic: a lazily imported module (which the standby imports last)
    announces its import with a file and then takes a second, and the edit lands then."""
    make_django_project(tmp_path)
    marker = tmp_path / "imported"
    (tmp_path / "polls/lazy.py").write_text(
        "import pathlib, time\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "time.sleep(1.0)\n"
        "def text():\n    return 'lazy'\n")
    edit(tmp_path / "polls/views.py", "def index(request):",
         "def lazy(request):\n    from .lazy import text\n    return HttpResponse(text())\n"
         "def index(request):")
    edit(tmp_path / "polls/urls.py", 'path("", views.index),',
         'path("", views.index), path("lazy", views.lazy),')
    server = start_server(APP, "--reload", "--worker-mode", "thread", cwd=tmp_path)
    server.wait_for(WATCHING_RE)
    served(server, "/lazy", "lazy")  # polls.lazy is loaded now: a standby imports it too
    marker.unlink()
    start = len(server.lines)
    edit(tmp_path / "polls/models.py", "model-v1", "model-v2")
    wait_until(marker.exists, DEADLINE, "the standby importing polls.lazy")
    edit(tmp_path / "polls/views.py", "view-v1", "view-v2")  # views.py is already imported
    served(server, "/model", "model-v2")
    served(server, "/", "view-v2")
    server.wait_for(r"Reloaded: .*partial", DEADLINE, start=start)
