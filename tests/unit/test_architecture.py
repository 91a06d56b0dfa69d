"""The package's shape, checked: the import-linter contracts in pyproject.toml (one-way layers,
no cycles), no function-local ``devserve`` imports (they hide the dependency graph and the
cycles the contracts would catch), and module size limits (one job per module)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from devserve.supervision.check import BARE_PACKAGE

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "devserve"
MAX_LINES = 500
MAX_LINES_SUPERVISOR = 300

LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_import_contracts_are_kept() -> None:
    """lint-imports over the source tree (import-linter parses files, it imports nothing of
    devserve); run in a subprocess so its sys.path and logging stay out of this process."""
    result = subprocess.run([sys.executable, "-c", LINT], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def imports_devserve(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "devserve"
    return any(alias.name.split(".")[0] == "devserve" for alias in node.names)


def function_local_imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, function) of every devserve import inside a function body, nested ones too."""
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Import | ast.ImportFrom) and imports_devserve(node):
                yield node.lineno, func.name


def test_function_local_import_finder_sees_nested_and_relative_imports() -> None:
    tree = ast.parse("import os\nfrom devserve import config\n"
                     "def f():\n    import devserve.logs\n"
                     "    def g():\n        from .errors import ConfigError\n"
                     "async def h():\n    import json\n")
    assert sorted(set(function_local_imports(tree))) == [(4, "f"), (6, "f"), (6, "g")]


def test_no_function_local_devserve_imports() -> None:
    found = sorted({f"{name(path)}:{line} in {func}()"
                    for path in modules()
                    for line, func in function_local_imports(ast.parse(path.read_text()))})
    assert not found, "import these at module top (a cycle means the code is in the wrong " \
                      "place):\n" + "\n".join(found)


def test_the_fresh_process_check_imports_only_what_it_uses() -> None:
    """The check runs in a bare interpreter (see ``devserve.supervision.check``): what it
    imports is its cost."""
    probe = (BARE_PACKAGE + "import devserve.supervision.check; "
             "print(' '.join(m for m in ('devserve.server', 'devserve.display', 'rich', "
             "'aioquic', 'h2', 'uvloop', 'devserve.workers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout.strip() == "", f"the check imports {result.stdout.strip()}"


def test_modules_stay_small() -> None:
    sizes = {path: len(path.read_text().splitlines()) for path in modules()}
    too_big = [f"{name(path)}: {lines} lines (limit {MAX_LINES})"
               for path, lines in sorted(sizes.items()) if lines > MAX_LINES]
    supervisor = sizes[PACKAGE / "supervisor.py"]
    if supervisor > MAX_LINES_SUPERVISOR:
        too_big.append(f"devserve/supervisor.py: {supervisor} lines (the facade's limit "
                       f"{MAX_LINES_SUPERVISOR})")
    assert not too_big, "\n".join(too_big)
