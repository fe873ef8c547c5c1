"""Asking upstream about an organization's object, with one client's credential.

Every request here carries that client's ``authorization`` and goes to the
organizations host only, never following a redirect (the credential must reach
upstream and nowhere else). Upstream's 401, 403 and 404 come back as
``UpstreamRefused`` carrying what the client needs to see; a 401 or 403 also
withdraws whatever upstream had accepted of that credential for that organization.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import aiohttp

from ..errors import HexproxyError, UpstreamRefused, UpstreamStatus
from ..store.cachekey import CacheKey
from ..upstream.client import Upstream
from .credentials import Credential
from .grants import Grants

REFUSALS = (401, 403, 404)
REFUSAL_BODY_LIMIT = 16 * 1024
PUBLIC_KEY_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class Reply:
    """Upstream's 200 or 304 to a credentialed request (the body only for a 200 when read)."""

    status: int
    body: bytes
    etag: str | None
    last_modified: str | None


class Asker:
    """Credentialed requests to the organizations host, recording what upstream accepted."""

    def __init__(self, upstream: Upstream, grants: Grants, clock: Callable[[], float]) -> None:
        self.upstream = upstream
        self.grants = grants
        self.clock = clock

    def headers(self, credential: Credential, etag: str | None = None) -> dict[str, str]:
        headers = {"Authorization": credential.header}
        if etag:
            headers["If-None-Match"] = etag
        return headers

    async def fetch(
        self, key: CacheKey, credential: Credential, *, etag: str | None, limit: int | None
    ) -> Reply:
        """A (conditional) GET; the body is read up to ``limit`` bytes, or not at all when
        ``limit`` is None (only the verdict on the credential is wanted)."""
        async with self.upstream.open(
            key,
            headers=self.headers(credential, etag),
            accept=(200, 304, *REFUSALS),
            allow_redirects=False,
        ) as resp:
            if resp.status in REFUSALS:
                raise await self.refused(key, credential, resp)
            self.grants.accept(credential.digest, key.org, self.clock())
            body = b""
            if resp.status == 200 and limit is not None:
                body = await self.upstream.read_bounded(resp, limit)
            return Reply(
                resp.status, body, resp.headers.get("ETag"), resp.headers.get("Last-Modified")
            )

    @contextlib.asynccontextmanager
    async def stream(
        self, key: CacheKey, credential: Credential
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The streaming GET a Download reads a tarball or docs file from."""
        async with self.upstream.open(
            key,
            headers=self.headers(credential),
            accept=(200, *REFUSALS),
            allow_redirects=False,
        ) as resp:
            if resp.status != 200:
                raise await self.refused(key, credential, resp)
            self.grants.accept(credential.digest, key.org, self.clock())
            yield resp

    async def public_key(self, org: str, credential: Credential) -> bytes:
        """``/repos/ORG/public_key`` from upstream, with the credential (not cached)."""
        path = f"/repos/{org}/public_key"
        sent = await self.upstream.send(
            self.upstream.orgs,
            "GET",
            path,
            headers=self.headers(credential),
            body=b"",
            limit=PUBLIC_KEY_LIMIT,
        )
        if sent.status in REFUSALS:
            raise self._refusal(path, org, credential, sent.status, sent.headers, sent.body)
        if sent.status != 200:
            raise UpstreamStatus(f"upstream answered {sent.status} for {path}", sent.status)
        self.grants.accept(credential.digest, org, self.clock())
        return sent.body

    async def refused(
        self, key: CacheKey, credential: Credential, resp: aiohttp.ClientResponse
    ) -> UpstreamRefused:
        try:
            body = await self.upstream.read_bounded(resp, REFUSAL_BODY_LIMIT)
        except (HexproxyError, aiohttp.ClientError, TimeoutError, OSError):
            body = b""  # a refusal whose body cannot be read is still a refusal
        return self._refusal(str(key), key.org, credential, resp.status, resp.headers, body)

    def _refusal(
        self,
        what: str,
        org: str,
        credential: Credential,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> UpstreamRefused:
        if status in (401, 403):
            self.grants.refuse(credential.digest, org)
        return UpstreamRefused(
            f"upstream answered {status} for {what}",
            status,
            hex_message=headers.get("x-hex-message"),
            www_authenticate=headers.get("WWW-Authenticate"),
            body=body[:REFUSAL_BODY_LIMIT],
            content_type=headers.get("Content-Type"),
        )
