"""--http3 with an app that runs on sync workers is refused up front (exit 2, one line)
instead of advertising Alt-Svc for an endpoint that cannot serve it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WSGI_APP = (
    'def app(environ, start_response):\n    start_response("200 OK", [])\n    return [b"x"]\n'
)


def test_http3_with_a_wsgi_app_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "wsgi_app.py").write_text(WSGI_APP)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DEVSERVE_CACHE_DIR": str(tmp_path / "cache"),
           "DEVSERVE_TUI": "off"}
    proc = subprocess.run(
        [sys.executable, "-m", "devserve", "wsgi_app:app", "--https", "--http3", "--port", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("devserve: error:")]
    assert len(errors) == 1 and "--http3" in errors[0] and "sync workers" in errors[0]
