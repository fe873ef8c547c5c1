"""The HTTP layer: translates requests into cache calls and results into responses."""

from .app import create_app

__all__ = ["create_app"]
