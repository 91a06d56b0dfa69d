from __future__ import annotations

from django.urls import path

from mysite import views

urlpatterns = [
    path("", views.index),
    path("form", views.form),
    path("json", views.echo_json),
    path("stream", views.stream),
    path("file", views.file),
    path("error", views.error),
]
