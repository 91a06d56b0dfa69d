"""A small Django 5 project: settings, urls, one app (`polls`) with a model, admin, a view that
renders a template, and a static file served by `django.contrib.staticfiles` under DEBUG."""

from __future__ import annotations

from pathlib import Path

from tests.projects import write_files

FILES: dict[str, str] = {
    "mysite/__init__.py": "",
    "mysite/settings.py": '''
from pathlib import Path
BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "test-only"
DEBUG = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles", "polls",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "mysite.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [BASE_DIR / "templates"], "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages"]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
STATIC_URL = "static/"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
GREETING = "settings-v1"
''',
    "mysite/urls.py": '''
from django.contrib import admin
from django.urls import include, path
urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("polls.urls")),
]
''',
    "mysite/asgi.py": '''
import os
from django.core.asgi import get_asgi_application
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_asgi_application()
''',
    "polls/__init__.py": "",
    "polls/apps.py": '''
from django.apps import AppConfig
class PollsConfig(AppConfig):
    name = "polls"
''',
    "polls/models.py": '''
from django.db import models
class Question(models.Model):
    text = models.CharField(max_length=200)
    def describe(self):
        return "model-v1"
''',
    "polls/admin.py": '''
from django.contrib import admin
from .models import Question
@admin.register(Question)
class QuestionAdmin(admin.ModelAdmin):
    list_display = ["text"]
    search_fields = ["text"]
''',
    "polls/views.py": '''
from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import render
from .models import Question
def index(request):
    return HttpResponse("view-v1")
def page(request):
    return render(request, "polls/page.html", {"who": "template"})
def model(request):
    return HttpResponse(Question(text="q").describe())
def greeting(request):
    return HttpResponse(settings.GREETING)
''',
    "polls/urls.py": '''
from django.urls import path
from . import views
urlpatterns = [
    path("", views.index),
    path("page", views.page),
    path("model", views.model),
    path("greeting", views.greeting),
]
''',
    "polls/templates/polls/page.html": "<html><body><p>template-v1 {{ who }}</p></body></html>\n",
    "templates/.keep": "",
}


def make_django_project(root: Path) -> Path:
    """Write the project under *root*; serve it with ``mysite.asgi:application``."""
    return write_files(root, FILES)
