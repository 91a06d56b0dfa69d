"""WSGI (PEP 3333) without a socket: the environ, ``wsgi.input``, ``start_response`` and
``wsgi.file_wrapper``, and :func:`run_wsgi` which drives one app call against a
:class:`ResponseSink`. The SyncWorker supplies the sink (a blocking HTTP/1.1 connection); the unit
tests feed real request bytes through the same functions.

Rules kept here:
- Headers go out with the first non-empty body chunk (or at the end), so an app may still call
  ``start_response(..., exc_info)`` to replace them until then; after that, ``exc_info`` is
  re-raised, as PEP 3333 requires.
- A response with one chunk and no framing gets a ``content-length``; otherwise HTTP/1.1
  chunks it. ``close()`` of the iterable is always called, also when the client went away.
- ``PATH_INFO`` is the percent-decoded path as latin-1 text (bytes-in-unicode, PEP 3333).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import IO, Any, Protocol
from urllib.parse import unquote_to_bytes

from devserve.asgi.scope import TrustedProxies, apply_proxy_headers, split_target

Headers = list[tuple[bytes, bytes]]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], None]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# Hop-by-hop headers belong to the server (PEP 3333); ``connection: close`` is honoured.
_HOP_BY_HOP = {b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
               b"trailers", b"transfer-encoding", b"upgrade"}


class ClientGone(OSError):
    """The client closed the connection while the app was reading or writing."""


class ResponseSink(Protocol):
    """Where a response goes (the same shape as the ASGI cycle's owner)."""

    def write_response(self, status: int, headers: Headers, body: bytes, end: bool) -> None: ...

    def write_body(self, data: bytes, end: bool) -> None: ...


class WSGIInput:
    """``wsgi.input``: reads the request body from the connection as the app asks for it.

    *pull* returns the next body chunk, ``b""`` at the end; it may raise ``OSError``.
    """

    def __init__(self, pull: Callable[[], bytes]) -> None:
        self._pull = pull
        self._buf = bytearray()
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        chunk = self._pull()
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buf))
        while len(self._buf) < size and self._fill():
            pass
        return self._take(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        if not self._buf:
            self._fill()
        data = self._take(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        while True:
            end = self._buf.find(b"\n")
            if end >= 0 and (limit < 0 or end < limit):
                return self._take(end + 1)
            if 0 <= limit <= len(self._buf):
                return self._take(limit)
            if not self._fill():
                return self._take(len(self._buf))

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def exhausted(self) -> bool:
        return self._eof and not self._buf


class FileWrapper:
    """``wsgi.file_wrapper``: iterate a file-like object in blocks; ``close()`` closes it."""

    def __init__(self, filelike: IO[bytes], blksize: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.blksize = blksize
        close = getattr(filelike, "close", None)
        if close is not None:
            self.close = close

    def __iter__(self) -> Iterator[bytes]:
        while data := self.filelike.read(self.blksize):
            yield data


def build_environ(
    *,
    method: bytes,
    target: bytes,
    http_version: bytes,
    headers: Headers,
    scheme: str,
    server: tuple[str, int] | None,
    client: tuple[str, int] | None,
    root_path: str,
    body: Any,
    trusted: TrustedProxies | None = None,
    multiprocess: bool = False,
    errors: IO[str] | None = None,
) -> dict[str, Any]:
    """The PEP 3333 environ for one request (headers with ``_`` in the name are dropped, as a
    ``X_Forwarded_For`` would otherwise pass for ``X-Forwarded-For``)."""
    raw_path, query = split_target(target)
    path = unquote_to_bytes(raw_path).decode("latin-1") if b"%" in raw_path else \
        raw_path.decode("latin-1")
    if root_path and (path == root_path or path.startswith(root_path + "/")):
        path = path[len(root_path):]  # the proxy did not strip the prefix: do it here
    if client is not None and trusted is not None:
        mini: dict[str, Any] = {"type": "http", "client": client, "scheme": scheme,
                                "headers": headers}
        apply_proxy_headers(mini, trusted)
        client, scheme = mini["client"], mini["scheme"]
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method.decode("latin-1"),
        "SCRIPT_NAME": root_path,
        "PATH_INFO": path,
        "QUERY_STRING": query.decode("latin-1"),
        "SERVER_PROTOCOL": "HTTP/" + http_version.decode("latin-1"),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": body,
        "wsgi.errors": errors if errors is not None else sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
        "wsgi.input_terminated": True,  # read() returns b"" at the end, even when chunked
    }
    host_header = ""
    for name, value in headers:
        if b"_" in name:
            continue
        text = value.decode("latin-1")
        if name == b"content-type":
            environ["CONTENT_TYPE"] = text
            continue
        if name == b"content-length":
            environ["CONTENT_LENGTH"] = text
            continue
        if name == b"host":
            host_header = text
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if key in environ:
            sep = "; " if key == "HTTP_COOKIE" else ","
            environ[key] = environ[key] + sep + text
        else:
            environ[key] = text
    if server is not None and server[1]:
        environ["SERVER_NAME"], environ["SERVER_PORT"] = server[0], str(server[1])
    else:  # a Unix socket: name the server after the Host header
        host, _, port = host_header.rpartition(":") if ":" in host_header else (
            host_header, "", "")
        environ["SERVER_NAME"] = host or "localhost"
        environ["SERVER_PORT"] = port or ("443" if scheme == "https" else "80")
    if client is not None:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
    return environ


def _status_code(status: str) -> int:
    code, _, _reason = status.partition(" ")
    if len(code) != 3 or not code.isdigit():
        raise ValueError(f"WSGI: invalid status line {status!r}")
    return int(code)


class WSGIResponse:
    """``start_response`` and the write path of one WSGI call."""

    def __init__(self, sink: ResponseSink, *, extra_headers: Headers, force_close: bool,
                 is_head: bool) -> None:
        self.sink = sink
        self.extra_headers = extra_headers
        self.force_close = force_close
        self.is_head = is_head
        self.status = 0
        self.headers: Headers | None = None
        self.headers_sent = False
        self.complete = False
        self.bytes_sent = 0

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: ExcInfo | None = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the frame ↔ traceback cycle
        elif self.headers is not None:
            raise AssertionError("WSGI: start_response() called twice without exc_info")
        code = _status_code(status)
        out: Headers = []
        names: set[bytes] = set()
        for name, value in headers:
            lname = name.lower().encode("latin-1")
            if lname in _HOP_BY_HOP:
                continue
            if lname == b"connection":
                if value.strip().lower() == "close":
                    self.force_close = True
                continue
            names.add(lname)
            out.append((lname, value.encode("latin-1")))
        out.extend((n, v) for n, v in self.extra_headers if n not in names)
        self.status, self.headers = code, out
        return self.write

    def _head(self, extra: Headers | None = None) -> Headers:
        assert self.headers is not None
        headers = [*self.headers, *(extra or [])]
        if self.force_close:
            headers.append((b"connection", b"close"))
        return headers

    def write(self, data: bytes) -> None:
        """The ``write()`` callable (and the path every body chunk takes)."""
        if self.headers is None:
            raise AssertionError("WSGI: write() before start_response()")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"WSGI: body chunks must be bytes, got {type(data).__name__}")
        if not data:
            return
        body = b"" if self.is_head else bytes(data)
        self.bytes_sent += len(data)
        if not self.headers_sent:
            self.headers_sent = True
            self.sink.write_response(self.status, self._head(), body, False)
        elif body:
            self.sink.write_body(body, False)

    def finish(self, single: bytes | None = None) -> None:
        """End the response; *single* is the whole body when the app returned one chunk."""
        if self.headers is None:
            raise RuntimeError("WSGI: the app returned without calling start_response()")
        if not self.headers_sent:
            self.headers_sent = True
            body = single or b""
            extra: Headers = []
            if not any(n in (b"content-length", b"transfer-encoding") for n, _ in self.headers):
                extra.append((b"content-length", str(len(body)).encode()))
            self.bytes_sent += len(body)
            self.sink.write_response(self.status, self._head(extra),
                                     b"" if self.is_head else body, True)
        else:
            self.sink.write_body(b"", True)
        self.complete = True


def run_wsgi(app: WSGIApp, environ: dict[str, Any], response: WSGIResponse) -> None:
    """Call *app*, stream what it returns into *response*, always ``close()`` the iterable.

    Exceptions propagate: the caller answers 500 when ``response.headers_sent`` is False and
    aborts the connection otherwise.
    """
    result = app(environ, response.start_response)
    try:
        if isinstance(result, list | tuple) and len(result) == 1 and not response.headers_sent \
                and response.headers is not None:
            response.finish(bytes(result[0]))  # one chunk: send it with a content-length
            return
        for chunk in result:
            if chunk:
                response.write(chunk)
            elif response.headers is None:
                raise AssertionError("WSGI: the app yielded before start_response()")
        response.finish()
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
