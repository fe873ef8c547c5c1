"""Wiring: the one place that builds the proxy's parts and connects them."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..cache import Cache
from ..config import Config, load_public_key_pem
from ..orgs import OrgRepos
from ..registry import load_public_key
from ..storage import FileStorage
from ..upstream import Upstream
from . import hex_api, middleware, ops, orgs, routes
from .state import CACHE, CONFIG, ORGS, PUBLIC_KEY_PEM


def build_cache(config: Config) -> Cache:
    """The policy object and what it stands on (no I/O yet, no event loop needed).

    Order: the verifying key first (a bad key must stop us before we serve),
    then storage, then the upstream client (one circuit breaker per upstream host),
    then the cache that ties them together.
    """
    pem = load_public_key_pem(config)
    key = load_public_key(pem)
    storage = FileStorage(config.cache_dir)
    upstream = Upstream(config.upstream)
    return Cache(config, storage, upstream, key)


def build_orgs(cache: Cache) -> OrgRepos:
    """hex.pm organizations' repositories, on the cache's storage, key and upstream client."""
    return OrgRepos(cache.config, cache.storage, cache.upstream, cache.public_key, cache.counters)


def create_app(config: Config, *, sweep_temp: bool = True) -> web.Application:
    app = web.Application(middlewares=[middleware.errors])
    app[CONFIG] = config
    app[PUBLIC_KEY_PEM] = load_public_key_pem(config)
    cache = build_cache(config)
    app[CACHE] = cache
    org_repos = build_orgs(cache)
    app[ORGS] = org_repos

    async def resources(_: web.Application) -> AsyncIterator[None]:
        # Temp files left by a crash are swept before the first request. With
        # several workers the parent does this once, before they start.
        if sweep_temp:
            cache.storage.prepare()
        else:
            cache.storage.tmp.mkdir(parents=True, exist_ok=True)
        await cache.upstream.start()
        yield
        await org_repos.close()  # before the cache closes the upstream client they share
        await cache.close()

    app.cleanup_ctx.append(resources)
    routes.add_routes(app)
    orgs.add_routes(app)  # /repos/ORG/...: hex.pm organizations
    hex_api.add_routes(app)  # the few /api/ calls mix makes for organization keys
    ops.setup(app)  # operator endpoints, request metrics, background LRU eviction
    return app
