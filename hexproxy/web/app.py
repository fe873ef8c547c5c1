"""The aiohttp application: the cache (built in ``cache.wiring``), hex.pm organizations'
repositories beside it (``orgs``), routes and ops endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from ..cache.wiring import build_cache
from ..config import Config, load_public_key_pem
from ..hosted import Hosted
from ..orgs import org_repos_beside
from . import hex_api, hosted_api, hosted_ops, hosted_repo, middleware, ops, orgs, routes
from .state import CACHE, CONFIG, ORGS, PUBLIC_KEY_PEM
from .tally import Board


def create_app(
    config: Config, *, sweep_temp: bool = True, board: Board | None = None, slot: int = 0
) -> web.Application:
    """The app; with ``--workers N``, ``board`` holds the counters every worker shares
    (tally.py) and ``slot`` is this worker's."""
    app = web.Application(middlewares=[middleware.errors])
    app[CONFIG] = config
    app[PUBLIC_KEY_PEM] = load_public_key_pem(config)
    cache = build_cache(config)
    app[CACHE] = cache
    org_repos = org_repos_beside(cache)
    app[ORGS] = org_repos

    async def resources(_: web.Application) -> AsyncIterator[None]:
        # Temp files left by a crash are swept before the first request. With
        # several workers the parent does this once, before they start.
        if sweep_temp:
            await asyncio.to_thread(cache.storage.prepare)
        else:
            await asyncio.to_thread(cache.storage.tmp.mkdir, parents=True, exist_ok=True)
        await cache.start()
        yield
        await org_repos.close()  # before the cache closes the upstream client they share
        await cache.close()

    app.cleanup_ctx.append(resources)
    routes.add_routes(app)
    orgs.add_routes(app)  # /repos/ORG/...: hex.pm organizations
    hex_api.add_routes(app)  # the few /api/ calls mix makes for organization keys
    if config.hosted.repos:
        # Opening creates each repository's tree and signing key on first start.
        app[hosted_repo.HOSTED] = Hosted.open(config)
        hosted_repo.add_routes(app)
        hosted_api.add_routes(app)
    ops.setup(app, board, slot)  # operator endpoints, request metrics, background LRU eviction
    if config.hosted.repos:
        hosted_ops.setup(app, app[ops.METRICS])
    return app
