"""The aiohttp application: the cache (built in ``cache.wiring``), routes and ops endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..cache.wiring import build_cache
from ..config import Config, load_public_key_pem
from . import middleware, ops, routes
from .state import CACHE, CONFIG, PUBLIC_KEY_PEM


def create_app(config: Config, *, sweep_temp: bool = True) -> web.Application:
    app = web.Application(middlewares=[middleware.errors])
    app[CONFIG] = config
    app[PUBLIC_KEY_PEM] = load_public_key_pem(config)
    cache = build_cache(config)
    app[CACHE] = cache

    async def resources(_: web.Application) -> AsyncIterator[None]:
        # Temp files left by a crash are swept before the first request. With
        # several workers the parent does this once, before they start.
        if sweep_temp:
            cache.storage.prepare()
        else:
            cache.storage.tmp.mkdir(parents=True, exist_ok=True)
        await cache.start()
        yield
        await cache.close()

    app.cleanup_ctx.append(resources)
    routes.add_routes(app)
    ops.setup(app)  # operator endpoints, request metrics, background LRU eviction
    return app
