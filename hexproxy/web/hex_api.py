"""The two hex.pm API calls mix makes for organization keys, forwarded to ``upstream.api_url``.

When ``HEX_API_URL`` points at the proxy (for publishing to hosted repositories),
mix sends these here too (../shared/hosting-protocol.md, part B):

- ``POST /api/oauth/token``: exchanging an organization key for a short-lived token
  (``grant_type=client_credentials``, the key as ``client_secret``), done before
  every run that reads an organization through a trusted mirror;
- ``GET /api/auth?domain=repository&resource=ORG``: ``mix hex.organization auth``
  checking a key.

Both go to the API host (its own circuit breaker) with the client's body and the
headers the API reads, and come back as the API answered. Bodies and credentials are
neither stored nor logged (the access log has the path only). Offline, or with the API
unreachable, the answer is a 502/504 whose body says why; mix then reports that the
exchange failed.

Only these two paths are claimed here; the rest of ``/api/`` belongs to the hosted
repositories' API.
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from ..errors import InvalidRequest, UpstreamUnavailable
from .clients import accepts_hex_message
from .orgs import passable_hex_message
from .state import CACHE

# What the API reads from a request; nothing else (cookies, proxy headers) is passed on.
REQUEST_HEADERS = ("Content-Type", "Accept", "Authorization", "User-Agent", "x-hex-otp")
RESPONSE_HEADERS = ("Content-Type", "WWW-Authenticate")
BODY_LIMIT = 64 * 1024  # a token request is a few hundred bytes
ANSWER_LIMIT = 1024 * 1024
AUTH_PARAMETERS = ("domain", "resource")


async def oauth_token(request: web.Request) -> web.StreamResponse:
    return await _forward(request, "POST", "/oauth/token")


async def auth(request: web.Request) -> web.StreamResponse:
    query = [(name, request.query[name]) for name in AUTH_PARAMETERS if name in request.query]
    return await _forward(request, "GET", "/auth?" + urlencode(query) if query else "/auth")


async def _forward(request: web.Request, method: str, path: str) -> web.StreamResponse:
    cache = request.app[CACHE]
    if cache.offline:
        raise UpstreamUnavailable(
            f"this proxy is offline: it cannot reach the hex.pm API for {path.partition('?')[0]}"
        )
    body = await _body(request)
    headers = {name: request.headers[name] for name in REQUEST_HEADERS if name in request.headers}
    upstream = cache.upstream
    sent = await upstream.send(
        upstream.api, method, path, headers=headers, body=body, limit=ANSWER_LIMIT
    )
    answer = {name: sent.headers[name] for name in RESPONSE_HEADERS if name in sent.headers}
    answer["Cache-Control"] = "no-store"  # tokens and verdicts on keys are nobody else's
    message = sent.headers.get("x-hex-message")
    if message and accepts_hex_message(request.headers.get("User-Agent")):
        answer["x-hex-message"] = passable_hex_message(message)
    return web.Response(status=sent.status, body=sent.body, headers=answer)


async def _body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > BODY_LIMIT:
        raise InvalidRequest(f"request body over {BODY_LIMIT} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > BODY_LIMIT:
            raise InvalidRequest(f"request body over {BODY_LIMIT} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/oauth/token", oauth_token)
    app.router.add_get("/api/auth", auth)
