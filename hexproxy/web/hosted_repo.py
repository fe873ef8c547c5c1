"""``/internal/NAME/...``: each hosted repository served as a Hex repository.

The same paths as repo.hex.pm under the repository's own prefix, which no hex.pm
organization path (``/repos/ORG/...``) can collide with. Registry files are the exact
signed bytes of the current generation; tarballs are the blobs their signed checksums
name. With ``read_keys`` set, every path answers 401 unless the request carries an
accepted key in ``authorization`` (mix: ``--auth-key``; rebar3: ``repo_key``).
"""

from __future__ import annotations

import asyncio
import hashlib
from email.utils import formatdate

from aiohttp import web

from ..cache.entries import StoredFile
from ..errors import NotFound
from ..hosted import Hosted, HostedRepository
from ..registry import check_name, parse_docs_filename, parse_tarball_filename
from ..store.cachekey import docs_key, tarball_key
from .responses import OCTET, SendfileResponse, if_none_match, open_stored

HOSTED = web.AppKey("hosted", Hosted)
PREFIX = "/internal/{repo}"
# Published files can be replaced or reverted: clients may keep them, but must ask again.
NO_CACHE = "no-cache"


def _repo(request: web.Request) -> HostedRepository:
    hosted = request.app[HOSTED]
    name = request.match_info["repo"]
    repo = hosted.repo(name)
    hosted.check_read(name, request.headers.get("Authorization"))
    return repo


def _cache_control(request: web.Request) -> str:
    private = request.app[HOSTED].read_protected(request.match_info["repo"])
    return f"private, {NO_CACHE}" if private else f"public, {NO_CACHE}"


async def _registry(request: web.Request, resource: str) -> web.StreamResponse:
    repo = _repo(request)
    body = await asyncio.to_thread(repo.read_registry, resource)
    if body is None:
        raise NotFound(f"{repo.name} has no {resource}")
    headers = {
        "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
        "Content-Type": OCTET,
        "Cache-Control": _cache_control(request),
    }
    if if_none_match(request, headers["ETag"]):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers=headers)


async def names(request: web.Request) -> web.StreamResponse:
    return await _registry(request, "names")


async def versions(request: web.Request) -> web.StreamResponse:
    return await _registry(request, "versions")


async def package(request: web.Request) -> web.StreamResponse:
    _repo(request)  # a client without an accepted key learns nothing, not even a 400
    return await _registry(request, f"packages/{check_name(request.match_info['name'])}")


async def tarball(request: web.Request) -> web.StreamResponse:
    repo = _repo(request)
    name, version = parse_tarball_filename(request.match_info["filename"])
    blob = await asyncio.to_thread(repo.tarball, name, version)
    if blob is None:
        raise NotFound(f"{repo.name} has no release {name} {version}")
    stored = StoredFile(tarball_key(name, version), blob.path, blob.size, blob.sha256, blob.mtime)
    return await _file(request, stored)


async def docs(request: web.Request) -> web.StreamResponse:
    repo = _repo(request)
    name, version = parse_docs_filename(request.match_info["filename"])
    path = repo.docs_path(name, version)
    try:
        stat = await asyncio.to_thread(path.stat)
    except FileNotFoundError:
        raise NotFound(f"{repo.name} has no docs for {name} {version}") from None
    # Docs have no signed checksum; size and mtime tell a replaced upload apart.
    tag = f"{stat.st_mtime_ns:x}-{stat.st_size:x}"
    stored = StoredFile(docs_key(name, version), path, stat.st_size, tag, stat.st_mtime)
    return await _file(request, stored)


async def _file(request: web.Request, stored: StoredFile) -> web.StreamResponse:
    headers = {
        "ETag": stored.etag,
        "Last-Modified": formatdate(stored.stored_at, usegmt=True),
        "Content-Type": OCTET,  # never Content-Encoding: clients gunzip docs themselves
        "Cache-Control": _cache_control(request),
    }
    if if_none_match(request, stored.etag):
        return web.Response(status=304, headers=headers)
    if request.method == "HEAD":
        return SendfileResponse(stored, headers, None)
    file = await open_stored(stored)  # in a thread; None if it went since the stat
    if file is None:
        raise NotFound(f"{stored.key} is no longer here")
    return SendfileResponse(stored, headers, file)


async def public_key(request: web.Request) -> web.StreamResponse:
    repo = _repo(request)
    return web.Response(
        body=repo.public_key_pem,
        headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": NO_CACHE},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/names", names)
    app.router.add_get(f"{PREFIX}/versions", versions)
    app.router.add_get(f"{PREFIX}/packages/{{name}}", package)
    app.router.add_get(f"{PREFIX}/tarballs/{{filename}}", tarball)
    app.router.add_get(f"{PREFIX}/docs/{{filename}}", docs)
    app.router.add_get(f"{PREFIX}/public_key", public_key)
