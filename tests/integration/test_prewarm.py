"""Process generations forked from a pre-warmed template (Linux): after the first generation
reported its libraries, a reloaded child finds them already imported and imports only the
project; the template never runs project code; ``DEVSERVE_NO_TEMPLATE=1`` spawns; nothing is
left behind at exit.

Each project gets a probe: its first module records which library modules (stdlib,
site-packages) the process had loaded before any project code ran, and the app serves the
libraries its own import had to load — what the template did not provide."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ServerFactory, ServerProcess, descendants, wait_until
from tests.projects import WATCHING_RE, edit, served
from tests.projects.django_project import make_django_project
from tests.projects.fastapi_project import make_fastapi_project

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="templates are Linux-only")

TEMPLATE_RE = r"process template ready: \d+ library modules preloaded"
ROOT = Path(__file__).resolve().parents[2]
PROCESS = ("--reload", "--worker-mode", "process", "--log-level", "debug")

PROBE = '''
import sys
import sysconfig

_DIRS = tuple(sorted({sysconfig.get_paths()[key]
                      for key in ("stdlib", "platstdlib", "purelib", "platlib")}))


def libraries():
    return {name for name, module in list(sys.modules.items())
            if str(getattr(module, "__file__", None) or "").startswith(_DIRS)}


AT_START = libraries()  # before any project code ran in this process
'''

FASTAPI_ENDPOINT = '''
import os
import shop

IMPORTED = sorted(shop.libraries() - shop.AT_START)  # what importing the project loaded


@app.get("/imported")
def imported() -> dict[str, object]:
    return {"version": "imp-v1", "imported": IMPORTED, "pid": os.getpid()}
'''


def fastapi_project(root: Path) -> None:
    make_fastapi_project(root)
    (root / "shop/__init__.py").write_text(PROBE)
    main = root / "shop/main.py"
    main.write_text(main.read_text() + FASTAPI_ENDPOINT)


def django_project(root: Path) -> None:
    make_django_project(root)
    (root / "mysite/__init__.py").write_text(PROBE)
    asgi = root / "mysite/asgi.py"
    asgi.write_text(asgi.read_text() + "\nimport mysite\n"
                    "IMPORTED = sorted(mysite.libraries() - mysite.AT_START)\n")
    views = root / "polls/views.py"
    views.write_text(views.read_text() + (
        "\nimport os\nfrom django.http import JsonResponse\n"
        "def imported(request):\n"
        "    from mysite import asgi\n"
        "    return JsonResponse({'version': 'imp-v1', 'imported': asgi.IMPORTED,\n"
        "                         'pid': os.getpid()})\n"))
    edit(root / "polls/urls.py", 'path("", views.index),',
         'path("", views.index), path("imported", views.imported),')


def imported(server: ServerProcess, version: str) -> list[str]:
    """The libraries the generation serving *version* imported itself."""
    body = json.loads(served(server, "/imported", f'"{version}"'))
    return list(body["imported"])


def reload_to(server: ServerProcess, module: Path, old: str, new: str) -> list[str]:
    edit(module, old, new)
    return imported(server, new)


def test_fastapi_reloaded_children_import_no_library(tmp_path: Path,
                                                     start_server: ServerFactory) -> None:
    fastapi_project(tmp_path)
    server = start_server("shop.main:app", *PROCESS, cwd=tmp_path)
    server.wait_for(WATCHING_RE)
    first = imported(server, "imp-v1")  # generation 1 was spawned: it imported them itself
    assert {"fastapi", "sqlalchemy.orm", "pydantic", "jinja2"} <= set(first)
    server.wait_for(TEMPLATE_RE)  # built from what generation 1 reported
    main = tmp_path / "shop/main.py"
    assert reload_to(server, main, "imp-v1", "imp-v2") == []
    assert reload_to(server, main, "imp-v2", "imp-v3") == []
    # every edit is still served, from other modules too
    edit(tmp_path / "shop/routers/items.py", '"route-v1"', '"route-v2"')
    served(server, "/route", "route-v2")
    edit(tmp_path / "shop/models.py", '"model-v1"', '"model-v2"')
    served(server, "/items", "model-v2")


def test_django_reloaded_children_import_only_what_needs_the_settings(
        tmp_path: Path, start_server: ServerFactory) -> None:
    django_project(tmp_path)
    server = start_server("mysite.asgi:application", *PROCESS, cwd=tmp_path)
    server.wait_for(WATCHING_RE)
    first = imported(server, "imp-v1")
    assert {"django.db.models", "django.core.handlers.asgi", "django.urls"} <= set(first)
    server.wait_for(TEMPLATE_RE)
    views = tmp_path / "polls/views.py"
    for old, new in (("imp-v1", "imp-v2"), ("imp-v2", "imp-v3")):
        again = reload_to(server, views, old, new)
        # only models and what imports them: they need the project's settings and app registry
        assert again and all(name.startswith("django.contrib.") for name in again), again
    edit(views, "view-v1", "view-v2")
    served(server, "/", "view-v2")


def test_the_template_never_runs_project_code(tmp_path: Path,
                                              start_server: ServerFactory) -> None:
    """With ``DJANGO_SETTINGS_MODULE`` exported, a library imported in the template would read
    the project's settings; forked children would then keep the old ones."""
    make_django_project(tmp_path)
    server = start_server("mysite.asgi:application", *PROCESS, cwd=tmp_path,
                          env={"DJANGO_SETTINGS_MODULE": "mysite.settings"})
    server.wait_for(WATCHING_RE)
    served(server, "/greeting", "settings-v1")
    server.wait_for(TEMPLATE_RE)
    for old, new in (("settings-v1", "settings-v2"), ("settings-v2", "settings-v3")):
        edit(tmp_path / "mysite/settings.py", old, new)
        served(server, "/greeting", new)


def test_an_env_file_edit_reaches_the_next_generation(tmp_path: Path,
                                                      start_server: ServerFactory) -> None:
    """The template's environment is the one it started with: an edited ``--env-file`` makes
    it stale, so the next generation sees the new values."""
    (tmp_path / ".env").write_text("GREETING=env-v1\n")
    (tmp_path / "envapp.py").write_text(
        "import os\n\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body',\n"
        "                'body': os.environ['GREETING'].encode()})\n")
    server = start_server("envapp:app", *PROCESS, "--env-file", ".env", cwd=tmp_path)
    server.wait_for(WATCHING_RE)
    served(server, "/", "env-v1")
    server.wait_for(TEMPLATE_RE)
    (tmp_path / ".env").write_text("GREETING=env-v2\n")
    served(server, "/", "env-v2")


def test_no_template_spawns_every_generation(tmp_path: Path,
                                             start_server: ServerFactory) -> None:
    fastapi_project(tmp_path)
    server = start_server("shop.main:app", *PROCESS, cwd=tmp_path,
                          env={"DEVSERVE_NO_TEMPLATE": "1"})
    server.wait_for(WATCHING_RE)
    assert "fastapi" in imported(server, "imp-v1")
    assert "fastapi" in reload_to(server, tmp_path / "shop/main.py", "imp-v1", "imp-v2")
    assert "process template" not in server.output


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_templates_and_their_children_exit_with_the_server(
        tmp_path: Path, start_server: ServerFactory) -> None:
    fastapi_project(tmp_path)
    server = start_server("shop.main:app", *PROCESS, cwd=tmp_path)
    server.wait_for(WATCHING_RE)
    server.wait_for(TEMPLATE_RE)
    reload_to(server, tmp_path / "shop/main.py", "imp-v1", "imp-v2")
    processes = descendants(server.proc.pid)
    assert len(processes) >= 3  # the resource tracker, a template, the worker forked from it
    assert server.stop() == 0
    wait_until(lambda: not any(_alive(pid) for pid in processes), 10,
               "the templates and workers exited")


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_killed_template_neither_kills_nor_strands_its_workers(
        tmp_path: Path, start_server: ServerFactory) -> None:
    """The worker forked from a template that is then killed keeps serving, is not taken for
    dead, is drained by the next reload (which spawns: the template is gone) and exits."""
    fastapi_project(tmp_path)
    server = start_server("shop.main:app", *PROCESS, cwd=tmp_path)
    server.wait_for(WATCHING_RE)
    server.wait_for(TEMPLATE_RE)
    main = tmp_path / "shop/main.py"
    assert reload_to(server, main, "imp-v1", "imp-v2") == []  # forked from the template
    worker = json.loads(served(server, "/imported", '"imp-v2"'))["pid"]
    template = _parent(worker)
    assert template != server.proc.pid
    os.kill(template, signal.SIGKILL)
    wait_until(lambda: not _alive(template), 10, "the template gone")
    assert json.loads(served(server, "/imported", '"imp-v2"'))["pid"] == worker
    start = len(server.lines)
    assert "fastapi" in reload_to(server, main, "imp-v2", "imp-v3")  # spawned
    server.wait_for(r"process template is stale \(its process is gone\)", start=start)
    wait_until(lambda: not _alive(worker), 15, "the drained worker exited")
    assert "died" not in server.output


def test_a_template_imports_libraries_and_nothing_else(tmp_path: Path) -> None:
    """Project modules are refused; a library that starts a thread at import makes the
    template unusable (a forked child would not have the thread)."""
    (tmp_path / "projmod.py").write_text("raise SystemExit('project code ran')\n")
    libs = tmp_path / "site-packages"
    libs.mkdir()
    (libs / "threadlib.py").write_text(
        "import threading\nthreading.Thread(target=threading.Event().wait, daemon=True).start()\n")
    script = (
        "import sys\n"
        f"sys.path[:0] = [{str(tmp_path)!r}, {str(libs)!r}]\n"
        "from devserve.supervision.prewarm import import_libraries\n"
        "first = import_libraries(['projmod', 'json', 'email.mime.text'])\n"
        "print(first, 'projmod' in sys.modules, 'email.mime.text' in sys.modules)\n"
        "print(import_libraries(['threadlib']))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False", "True", "False"]
