"""WSGI entry point: ``devserve mysite.wsgi:application --app-dir examples/django_project``."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()
