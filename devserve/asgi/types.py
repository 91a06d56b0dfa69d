"""ASGI type aliases shared by the bridge, the workers and the importer."""

from __future__ import annotations

from devserve.importer import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]
