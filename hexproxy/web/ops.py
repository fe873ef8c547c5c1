"""Endpoints for the people who run the proxy, under a prefix no repository path can take,
and the bookkeeping behind them: the request-counting middleware and the eviction task.

``setup(app)`` wires all of it; ``create_app`` calls it once, after the core parts exist.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..cache.policy import Cache
from ..store.eviction import Evictor
from ..store.storage import FileStorage
from ..upstream.client import Host
from . import hosted_ops, status_page
from .exposition import Families
from .metrics import Metrics
from .state import CACHE
from .tally import Board

PREFIX = "/_hexproxy"
METRICS = web.AppKey("metrics", Metrics)
EVICTOR = web.AppKey("evictor", Evictor)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Routes whose objects are immutable files: their hits are recorded for LRU eviction.
FILE_ROUTES = frozenset({"/tarballs/{filename}", "/docs/{filename}", "/installs/{path}"})


async def health(request: web.Request) -> web.Response:
    """Liveness: the process is serving."""
    return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})


def cache_writable(storage: FileStorage) -> bool:
    """Can we store anything? Tried for real: permissions alone do not show a read-only
    mount, a full inode table, or a temp directory that was replaced by a file."""
    try:
        fd, name = tempfile.mkstemp(dir=storage.tmp, prefix="ready-", suffix=".part")
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def upstream_summary(cache: Cache, host: Host) -> str:
    """up / down / paused / offline for one upstream host, with the reason when not up."""
    if cache.offline:
        return "offline (serving from the cache only)"
    breaker = host.breaker
    state = breaker.state.value
    if state == "paused":
        return f"paused for {breaker.seconds_until_retry():.0f}s more: {breaker.last_error}"
    if state == "down":
        return f"down ({breaker.failures} failures): {breaker.last_error}"
    return state


async def ready(request: web.Request) -> web.Response:
    """Readiness: 200 while the cache directory takes writes; the body says whether the
    shared store answers and how each upstream host is (one line each, its circuit
    breaker's state).

    An unreachable upstream does not make the proxy unready: it still serves what is cached.
    """
    cache = request.app[CACHE]
    writable = await asyncio.to_thread(cache_writable, cache.storage)
    lines = [f"cache: {'writable' if writable else 'NOT writable'} ({cache.storage.root})"]
    if cache.shared is not None:
        # An unreachable store does not make the replica unready either: it serves from
        # its own disk and upstream meanwhile.
        problem = await cache.shared.check()
        state = f"UNREACHABLE: {problem}" if problem else "reachable"
        lines.append(f"store: {state} ({cache.shared.location})")
    for host in cache.upstream.hosts:
        lines.append(f"upstream {host.name}: {upstream_summary(cache, host)}")
    body = "".join(line + "\n" for line in lines)
    return web.Response(
        status=200 if writable else 503, text=body, headers={"Cache-Control": "no-store"}
    )


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    response = web.Response(body=body, headers={"Cache-Control": "no-store"})
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def status(request: web.Request) -> web.Response:
    """The human status page: server-rendered, no scripts."""
    metrics = request.app[METRICS]
    totals = metrics.totals()
    extra = hosted_ops.status_section(request.app, totals)
    html = status_page.render(metrics, totals, request.app[EVICTOR], extra)
    return web.Response(
        text=html,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )


def observe_requests(
    metrics: Metrics, evictor: Evictor
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The per-request bookkeeping: a few adds in memory, no I/O, no locks."""
    add = metrics.traffic.add
    accessed = evictor.access.accessed

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            add(("requests", _route(request), exc.status, "-"))
            raise
        except BaseException:
            add(("requests", _route(request), 500, "-"))
            raise
        route, status = _route(request), response.status
        result = response.headers.get("X-Cache", "-")
        add(("requests", route, status, result))
        size = response.content_length or response.body_length
        if request.method != "HEAD" and status != 304:
            add(("response_bytes", route), size)
        if status == 200 or status == 304:
            if route in FILE_ROUTES:
                accessed(request.path)
                if result == "MISS":
                    evictor.stored(size)
            name = _package_name(route, request)
            if name:
                add(("packages", name))
        return response

    return observe


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    # The catch-all installs route prints as {path:.+}; keep the label readable.
    return resource.canonical.replace("{path:.+}", "{path}")


def _package_name(route: str, request: web.Request) -> str | None:
    if route == "/packages/{name}":
        return request.match_info["name"]
    if route == "/tarballs/{filename}":
        return request.match_info["filename"].partition("-")[0]
    return None


def setup(app: web.Application, board: Board | None = None, slot: int = 0) -> None:
    """Operator endpoints, request counting (outermost middleware, so it sees the final
    status) and the eviction task (started after the cache's own resources). ``board``:
    the counters shared by every worker of the server (tally.py), ``slot`` this one's."""
    cache = app[CACHE]
    evictor = Evictor(
        cache.storage,
        cache.config.cache.max_size,
        can_refetch=cache.can_refetch,
        forget=cache.forget,
    )
    app[EVICTOR] = evictor
    counted = app[METRICS] = Metrics(cache, evictor, board, slot)
    counted.registry.register(Families(counted))
    app.middlewares.insert(0, observe_requests(counted, evictor))

    async def eviction(_: web.Application) -> AsyncIterator[None]:
        evictor.start()
        yield
        await evictor.stop()

    app.cleanup_ctx.append(eviction)
    app.cleanup_ctx.append(counted.syncing)
    app.router.add_get(f"{PREFIX}/health", health)
    app.router.add_get(f"{PREFIX}/ready", ready)
    app.router.add_get(f"{PREFIX}/metrics", metrics)
    app.router.add_get(f"{PREFIX}/", status)
