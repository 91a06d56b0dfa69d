"""A Flask (WSGI) app: devserve detects ``app(environ, start_response)`` and serves it on
SyncWorker threads, with reloads like any ASGI app.

Run it with ``devserve flask_app:app --app-dir examples`` (``--threads 16`` for more threads).

Routes: ``GET /`` (text), ``POST /form`` (form fields echoed as JSON), ``POST /json`` (JSON
echoed), ``POST /upload`` (body size, read in chunks from ``wsgi.input``), ``GET /stream?count=N``
(chunks produced over time), ``GET /file`` (``send_file`` through ``wsgi.file_wrapper``),
``GET /error`` (raises: Flask answers its 500 page; the traceback goes to the log only).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from flask import Flask, Response, jsonify, request, send_file

app = Flask(__name__)
ASSET = Path(__file__).resolve()  # any file will do: serve this very source file


@app.get("/")
def index() -> str:
    return "Hello from Flask"


@app.post("/form")
def form() -> Response:
    return jsonify(dict(request.form))


@app.post("/json")
def echo_json() -> Response:
    return jsonify({"received": request.get_json()})


@app.post("/upload")
def upload() -> Response:
    size = 0
    while chunk := request.stream.read(65536):
        size += len(chunk)
    return jsonify({"bytes": size})


@app.get("/stream")
def stream() -> Response:
    count = request.args.get("count", default=5, type=int)

    def chunks() -> Iterator[str]:
        for i in range(count):
            yield f"chunk {i}\n"
            time.sleep(0.01)

    return Response(chunks(), mimetype="text/plain")


@app.get("/file")
def file() -> Response:
    return send_file(ASSET, mimetype="text/x-python")


@app.get("/error")
def error() -> Response:
    raise RuntimeError("example failure: this detail must not reach the client")
