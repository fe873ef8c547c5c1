"""Endpoints for the people who run the proxy, under a prefix no repository path can take."""

from __future__ import annotations

import os

from aiohttp import web

from .state import CACHE

PREFIX = "/_hexproxy"


async def health(request: web.Request) -> web.Response:
    """Liveness: the process is serving."""
    return web.Response(text="ok\n")


async def ready(request: web.Request) -> web.Response:
    """Readiness: the cache directory is writable; the body says how upstream is doing."""
    cache = request.app[CACHE]
    writable = os.access(cache.storage.root, os.W_OK) and os.access(cache.storage.tmp, os.W_OK)
    upstream = "offline" if cache.offline else cache.upstream.breaker.state.value
    body = f"cache: {'writable' if writable else 'NOT writable'}\nupstream: {upstream}\n"
    return web.Response(status=200 if writable else 503, text=body)


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/health", health)
    app.router.add_get(f"{PREFIX}/ready", ready)
