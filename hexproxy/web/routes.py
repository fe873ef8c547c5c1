"""The repository endpoints: map the path to a cache key, ask the cache, answer.

Paths are checked against the Hex grammar (``store.cachekey.key_for_request_path``)
before anything touches the disk or upstream; the cache key (and so the file path) is
built from validated parts only.
"""

from __future__ import annotations

import contextlib
import logging
from email.utils import formatdate

from aiohttp import web

from ..cache.entries import Status
from ..cache.policy import Cache
from ..errors import HexproxyError, NotFound, UpstreamUnavailable
from ..store.cachekey import CacheKey, key_for_request_path
from ..upstream.download import Download
from .ops import METRICS
from .responses import (
    IMMUTABLE,
    SendfileResponse,
    cache_control,
    content_type,
    file_headers,
    if_none_match,
    metadata_response,
    open_stored,
)
from .state import CACHE, CONFIG, PUBLIC_KEY_PEM

log = logging.getLogger("hexproxy.web")

# The repository's routes; the object each path names comes from
# store.cachekey.key_for_request_path, the same function the fast path and eviction use.
REPOSITORY_ROUTES = (
    "/names",
    "/versions",
    "/packages/{name}",
    "/tarballs/{filename}",
    "/docs/{filename}",
    "/installs/{path:.+}",
)


async def repository_object(request: web.Request) -> web.StreamResponse:
    key = key_for_request_path(request.path)
    if key is None:  # the router matched, so only a path this function disowns gets here
        raise NotFound(f"{request.path} is not a repository object")
    if key.is_mutable:
        return await _metadata(request, key)
    return await _file(request, key)


async def public_key(request: web.Request) -> web.StreamResponse:
    """The key this proxy verifies with: what a client should trust for this mirror."""
    return web.Response(
        body=request.app[PUBLIC_KEY_PEM],
        headers={
            "Content-Type": "text/plain; charset=utf-8",
            "Cache-Control": "public, max-age=3600",
        },
    )


async def _metadata(request: web.Request, key: CacheKey) -> web.StreamResponse:
    answer = await request.app[CACHE].get_metadata(key)
    return metadata_response(request, answer, request.app[CONFIG].cache.registry_ttl)


async def _file(request: web.Request, key: CacheKey) -> web.StreamResponse:
    cache: Cache = request.app[CACHE]
    # Twice at most: a stored file can be removed (`hexproxy cache rm`, eviction) between
    # finding it and opening it; the second time round it is a miss.
    for _ in range(2):
        got = await cache.get_file(key)
        if isinstance(got, Download):
            return await _in_flight(request, cache, got)
        headers = file_headers(got, Status.HIT)
        if if_none_match(request, got.etag):
            return web.Response(status=304, headers=headers)
        if request.method == "HEAD":
            return SendfileResponse(got, headers, None)
        file = await open_stored(got)
        if file is not None:
            return SendfileResponse(got, headers, file)
        cache.forget(key)
    raise UpstreamUnavailable(f"{key} keeps vanishing from the cache; try again")


async def _in_flight(request: web.Request, cache: Cache, download: Download) -> web.StreamResponse:
    if download.expected is not None and if_none_match(request, f'"{download.expected.hex()}"'):
        # The client already holds exactly the bytes the registry signed.
        return web.Response(status=304, headers={"ETag": f'"{download.expected.hex()}"'})
    # The first byte within inflight_wait, or a 503/504 saying why not; an upstream error
    # before the first byte is a clean error status too.
    await cache.started(download)
    headers = _miss_headers(download)
    if request.method == "HEAD":
        # Answered now, from upstream's headers: not after the whole body has arrived.
        response = web.StreamResponse(headers=headers)
        if download.size is not None:
            response.content_length = download.size
        await response.prepare(request)
        await response.write_eof()
        return response
    return await stream_download(request, download, headers)


def _miss_headers(download: Download) -> dict[str, str]:
    headers = {
        "Content-Type": content_type(download.key),
        "Cache-Control": cache_control(download.key, 0) if download.key.is_mutable else IMMUTABLE,
        "X-Cache": Status.MISS.value,
        "Last-Modified": formatdate(usegmt=True),  # what the stored copy will say
    }
    if download.expected is not None:
        headers["ETag"] = f'"{download.expected.hex()}"'
    return headers


async def stream_download(
    request: web.Request, download: Download, headers: dict[str, str]
) -> web.StreamResponse:
    """Send a started fetch's bytes as they arrive; abort the connection if they turn out bad."""
    response = web.StreamResponse(headers=headers)
    if download.size is not None:
        response.content_length = download.size
    await response.prepare(request)
    try:
        # aclosing: a client that goes away must not leave the reader's file open.
        async with contextlib.aclosing(download.chunks()) as chunks:
            async for chunk in chunks:
                await response.write(chunk)
    except HexproxyError as exc:
        # Headers are gone: the only honest signal left is a broken transfer.
        log.warning("aborted %s to the client: %s", download.key, exc.message)
        if request.transport is not None:
            request.transport.abort()
        return response
    except ConnectionError:
        # The client left mid-stream: an everyday event, not an error (the fetch goes on
        # for everyone else). aiohttp then finishes the exchange quietly.
        log.debug("client left during %s", download.key)
        request.app[METRICS].traffic.add(("client_disconnects",))
        return response
    await response.write_eof()
    return response


def add_routes(app: web.Application) -> None:
    for route in REPOSITORY_ROUTES:
        app.router.add_get(route, repository_object)
    app.router.add_get("/public_key", public_key)
