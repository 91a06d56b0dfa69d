"""Views exercising what a server must get right: forms, JSON, streaming, files and errors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.views.decorators.csrf import csrf_exempt

ASSET = Path(__file__).resolve()


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello from Django", content_type="text/plain")


@csrf_exempt
def form(request: HttpRequest) -> JsonResponse:
    return JsonResponse({key: request.POST[key] for key in request.POST})


@csrf_exempt
def echo_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"received": json.loads(request.body)})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    count = int(request.GET.get("count", "5"))

    def chunks() -> Iterator[bytes]:
        for i in range(count):
            yield f"chunk {i}\n".encode()
            time.sleep(0.01)

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def file(request: HttpRequest) -> FileResponse:
    return FileResponse(ASSET.open("rb"), content_type="text/x-python")


def error(request: HttpRequest) -> HttpResponse:
    """Raises: with DEBUG off Django answers its plain 500 page, no traceback."""
    raise RuntimeError("example failure: this detail must not reach the client")
