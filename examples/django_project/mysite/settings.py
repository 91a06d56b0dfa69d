"""Minimal Django settings: no database, no templates; enough for views over WSGI and ASGI."""

from __future__ import annotations

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "devserve-example-not-secret"  # an example, never deployed
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "mysite.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
