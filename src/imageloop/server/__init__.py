"""The HTTP API: ``create_app(settings)`` builds it; ``imageloop serve`` runs it with uvicorn."""

from imageloop.server.app import create_app

__all__ = ["create_app"]
