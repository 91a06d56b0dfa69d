"""The Flask and Django examples, unmodified, with each framework's own "response closed" hook
counted, so a test can see that the server called ``close()`` on the response iterable:

- Flask: ``Response.call_on_close`` (registered in an ``after_request``, so 404 and 500 pages
  count too) runs from ``Response.close()``;
- Django: the ``request_finished`` signal is sent from ``HttpResponseBase.close()``.

File responses travel as ``wsgi.file_wrapper`` iterables, and werkzeug's ``send_file`` hands
the server the wrapper itself (``direct_passthrough``), whose ``close()`` closes the file, not the
Flask ``Response`` (so ``call_on_close`` does not run for it, under any server). The wrapper
below therefore also counts ``close()`` of every file given to ``wsgi.file_wrapper``.

``GET /__closed__`` (answered by the thin wrapper below, never by the framework, and not counted)
returns ``<responses closed> <files closed>`` so far in this process. Serve ``flask_app`` or
``django_app`` from this module with ``--workers 1`` so one process holds the counters.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
for _path in (EXAMPLES, EXAMPLES / "django_project"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

StartResponse = Callable[..., Callable[[bytes], None]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def increment(self, *args: object, **kwargs: object) -> None:
        with self._lock:
            self.value += 1


FILES_CLOSED = Counter()


class CountingFile:
    """A file-like object for ``wsgi.file_wrapper`` whose ``close()`` is counted."""

    def __init__(self, filelike: Any) -> None:
        self._filelike = filelike

    def read(self, size: int = -1) -> bytes:
        return self._filelike.read(size)  # type: ignore[no-any-return]

    def close(self) -> None:
        FILES_CLOSED.increment()
        self._filelike.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._filelike, name)


def with_counter_route(inner: WSGIApp, counter: Counter) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/__closed__":
            body = f"{counter.value} {FILES_CLOSED.value}".encode()
            start_response("200 OK", [("Content-Type", "text/plain"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        server_wrapper = environ["wsgi.file_wrapper"]
        environ["wsgi.file_wrapper"] = lambda filelike, blksize=8192: server_wrapper(
            CountingFile(filelike), blksize)
        return inner(environ, start_response)  # the framework's own iterable, untouched

    return app


def _flask() -> WSGIApp:
    import flask_app
    from flask import Response

    counter = Counter()

    @flask_app.app.after_request
    def count_close(response: Response) -> Response:
        response.call_on_close(counter.increment)
        return response

    return with_counter_route(flask_app.app, counter)


def _django() -> WSGIApp:
    from django.core.signals import request_finished
    from mysite.wsgi import application

    counter = Counter()
    request_finished.connect(counter.increment, weak=False)
    return with_counter_route(application, counter)


def __getattr__(name: str) -> WSGIApp:
    """Build only the framework asked for (``wsgi_more_examples:flask_app`` / ``:django_app``)."""
    builders = {"flask_app": _flask, "django_app": _django}
    if name not in builders:
        raise AttributeError(name)
    app = builders[name]()
    globals()[name] = app
    return app
