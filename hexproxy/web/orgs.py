"""``/repos/ORG/...``: hex.pm organizations' repositories, one credential at a time.

The handlers parse and validate the path, take the request's ``authorization``
header as its credential, ask the organization policy (hexproxy.orgs) and
translate its answer. Every answer is private (``Cache-Control: private``,
``Vary: Authorization``): a shared cache in front of the proxy must not keep it.
Upstream's refusals (401, 403, 404) go back with upstream's status, body,
``www-authenticate`` and ``x-hex-message`` (to the clients that take one).

The fast path never answers these paths: it only knows public keys, and an
organization's key never equals one.
"""

from __future__ import annotations

import re
from email.utils import formatdate

from aiohttp import web

from ..cache.entries import Entry, Status, StoredFile
from ..errors import InvalidRequest, NotFound, UpstreamRefused, UpstreamUnavailable
from ..orgs import Credential, OrgRepos, Served
from ..registry import is_valid_org, parse_docs_filename, parse_tarball_filename
from ..store.cachekey import CacheKey, Kind, docs_key, org_registry_key, package_key, tarball_key
from ..upstream.download import Download
from .clients import accepts_hex_message
from .middleware import hex_message
from .responses import (
    STALE_WARNING,
    SendfileResponse,
    content_type,
    file_headers,
    if_none_match,
    metadata_headers,
    open_stored,
)
from .routes import stream_download
from .state import CACHE, CONFIG, ORGS

PRIVATE = "private, no-cache"
# What Hex 2.5+ parses (hex lib/hex/http.ex): a quoted text, optionally with a level.
_PASSABLE_HEX_MESSAGE = re.compile(r'\A"[^"\r\n]*"(?:\s*;\s*level=(?:warn|fatal))?\Z')


def _org(request: web.Request) -> str:
    org = request.match_info["org"]
    if not is_valid_org(org):
        raise InvalidRequest(f"invalid organization name: {org[:64]!r}")
    if org == request.app[CONFIG].upstream.repo_name:
        raise NotFound(f"{org} is the public repository, not an organization")
    return org


def _credential(request: web.Request) -> Credential | None:
    return request.app[ORGS].credential(request.headers.get("Authorization"))


async def names(request: web.Request) -> web.StreamResponse:
    return await _small(request, org_registry_key(Kind.NAMES, _org(request)))


async def versions(request: web.Request) -> web.StreamResponse:
    return await _small(request, org_registry_key(Kind.VERSIONS, _org(request)))


async def package(request: web.Request) -> web.StreamResponse:
    return await _small(request, package_key(request.match_info["name"], _org(request)))


async def tarball(request: web.Request) -> web.StreamResponse:
    org = _org(request)
    name, version = parse_tarball_filename(request.match_info["filename"])
    return await _file(request, tarball_key(name, version, org))


async def docs(request: web.Request) -> web.StreamResponse:
    org = _org(request)
    name, version = parse_docs_filename(request.match_info["filename"])
    return await _file(request, docs_key(name, version, org))


async def public_key(request: web.Request) -> web.StreamResponse:
    """Passed through from upstream with the caller's credential; never cached."""
    orgs: OrgRepos = request.app[ORGS]
    try:
        pem = await orgs.public_key_pem(_org(request), _credential(request))
    except UpstreamRefused as exc:
        return refusal(exc, request.headers.get("User-Agent"))
    return web.Response(
        body=pem, headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": PRIVATE}
    )


async def unknown(request: web.Request) -> web.StreamResponse:
    raise NotFound("not a path of an organization's repository")


async def _small(request: web.Request, key: CacheKey) -> web.StreamResponse:
    orgs: OrgRepos = request.app[ORGS]
    try:
        served = await orgs.small(key, _credential(request))
    except UpstreamRefused as exc:
        return refusal(exc, request.headers.get("User-Agent"))
    entry = served.held
    assert isinstance(entry, Entry)
    ttl = request.app[CONFIG].cache.registry_ttl
    headers = _private(request, metadata_headers(entry, served.status, ttl), served)
    if if_none_match(request, entry.etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=entry.body, headers=headers)


async def _file(request: web.Request, key: CacheKey) -> web.StreamResponse:
    orgs: OrgRepos = request.app[ORGS]
    user_agent = request.headers.get("User-Agent")
    try:
        served = await orgs.file(key, _credential(request))
        if isinstance(served.held, Download):
            # Upstream's verdict on the credential comes with the first byte, within
            # inflight_wait (else 503/504). The fetch is shared by this key's other requests,
            # whatever happens to this one.
            await request.app[CACHE].started(served.held)
    except UpstreamRefused as exc:
        return refusal(exc, user_agent)
    held = served.held
    if isinstance(held, StoredFile):
        headers = _private(request, file_headers(held, served.status), served)
        if if_none_match(request, held.etag):
            return web.Response(status=304, headers=headers)
        if request.method == "HEAD":
            return SendfileResponse(held, headers, None)
        file = await open_stored(held)
        if file is None:
            raise UpstreamUnavailable(f"{key} was removed from the cache as it was served; retry")
        return SendfileResponse(held, headers, file)
    assert isinstance(held, Download)
    headers = {
        "Content-Type": content_type(key),
        "X-Cache": Status.MISS.value,
        "Last-Modified": formatdate(usegmt=True),
    }
    if held.expected is not None:
        etag = f'"{held.expected.hex()}"'
        headers["ETag"] = etag
        if if_none_match(request, etag):
            return web.Response(status=304, headers=_private(request, headers, served))
    return await stream_download(request, held, _private(request, headers, served))


def _private(request: web.Request, headers: dict[str, str], served: Served) -> dict[str, str]:
    headers["Cache-Control"] = PRIVATE
    headers["Vary"] = "Authorization"
    if served.status is Status.STALE:
        headers["Warning"] = STALE_WARNING
        if served.stale_note and accepts_hex_message(request.headers.get("User-Agent")):
            headers["x-hex-message"] = hex_message(served.stale_note, level="warn")
    return headers


def refusal(error: UpstreamRefused, user_agent: str | None) -> web.Response:
    """Upstream's 401/403/404, as upstream gave it (x-hex-message only where it is safe)."""
    headers = {
        "Content-Type": error.content_type or "text/plain; charset=utf-8",
        "Cache-Control": "no-store",
    }
    if error.www_authenticate:
        headers["WWW-Authenticate"] = error.www_authenticate
    if error.hex_message and accepts_hex_message(user_agent):
        headers["x-hex-message"] = passable_hex_message(error.hex_message)
    body = error.body if error.body else (error.message + "\n").encode()
    return web.Response(status=error.http_status, body=body, headers=headers)


def passable_hex_message(value: str) -> str:
    """Upstream's x-hex-message as it came if Hex can parse it, else its text re-quoted
    (an unquoted value makes Hex 2.5.1 crash)."""
    if _PASSABLE_HEX_MESSAGE.match(value):
        return value
    return hex_message(value.strip().strip('"'))


def add_routes(app: web.Application) -> None:
    prefix = "/repos/{org}"
    app.router.add_get(f"{prefix}/names", names)
    app.router.add_get(f"{prefix}/versions", versions)
    app.router.add_get(f"{prefix}/packages/{{name}}", package)
    app.router.add_get(f"{prefix}/tarballs/{{filename}}", tarball)
    app.router.add_get(f"{prefix}/docs/{{filename}}", docs)
    app.router.add_get(f"{prefix}/public_key", public_key)
    app.router.add_route("*", "/repos/{tail:.*}", unknown)
