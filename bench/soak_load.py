"""The soak's clients: a mix of requests, each checked against upstream's genuine bytes.

Each client has one connection and sends one request at a time, as mix and rebar3
do. ``SLOW_READERS`` of them read tarballs slowly. Every answer is classified:

- ``ok``: the genuine bytes (or a correct 304, HEAD or error status);
- ``wrong``: a 200 with other bytes, a 304 for a validator that does not match, a HEAD
  that announces another length or ETag (must never happen);
- ``failed``: an error status, a broken transfer or no answer; expected under faults.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

SLOW_READERS = 3
FIRST_BYTE_GUARD = 30.0  # a request with no headers after this long counts as waiting 30 s


@dataclass
class Catalogue:
    """What clients ask for, with the genuine answer for each path."""

    registry: dict[str, bytes]  # "/packages/NAME" -> body
    tarballs: dict[str, bytes]  # "/tarballs/NAME-VERSION.tar" -> body
    unknown: list[str]  # paths upstream does not have
    big: str  # the one large tarball, asked for rarely

    def etag(self, path: str) -> str:
        body = self.registry.get(path) or self.tarballs[path]
        return f'"{hashlib.sha256(body).hexdigest()}"'

    def genuine(self, path: str) -> bytes | None:
        return self.registry.get(path) or self.tarballs.get(path)


@dataclass
class ModeStats:
    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    first_byte: list[float] = field(default_factory=list)
    worst: tuple[float, str] = (0.0, "")


@dataclass
class Load:
    catalogue: Catalogue
    base_url: str
    seed: int = 18
    mode: str = "normal"  # set by the driver as phases change
    per_mode: dict[str, ModeStats] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)

    def record(self, mode: str, path: str, status: int, outcome: str, first_byte: float) -> None:
        stats = self.per_mode.setdefault(mode, ModeStats())
        stats.requests += 1
        stats.outcomes[outcome] += 1
        stats.statuses[status] += 1
        stats.first_byte.append(first_byte)
        if first_byte > stats.worst[0]:
            stats.worst = (first_byte, path)

    @property
    def total(self) -> int:
        return sum(s.requests for s in self.per_mode.values())

    async def run(self, clients: int, until: float) -> None:
        rng = random.Random(self.seed)
        tasks = [
            asyncio.create_task(self._client(random.Random(rng.random()), i < SLOW_READERS, until))
            for i in range(clients)
        ]
        await asyncio.gather(*tasks)

    async def _client(self, rng: random.Random, slow: bool, until: float) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=FIRST_BYTE_GUARD)
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session:
            while time.monotonic() < until:  # bounded by the soak's duration
                method, path, headers = self._pick(rng, slow)
                await self._one(session, method, path, headers, slow)

    def _pick(self, rng: random.Random, slow: bool) -> tuple[str, str, dict[str, str]]:
        cat = self.catalogue
        if slow:
            return "GET", rng.choice(list(cat.tarballs)), {}
        roll = rng.random()
        if roll < 0.05:
            return "GET", rng.choice(cat.unknown), {}
        if roll < 0.06:
            path = cat.big
        elif roll < 0.55:
            path = rng.choice(list(cat.registry))
        else:
            path = rng.choice(list(cat.tarballs))
        kind = rng.random()
        if kind < 0.08:
            return "HEAD", path, {}
        if kind < 0.14:
            return "GET", path, {"If-None-Match": cat.etag(path)}
        if kind < 0.18:
            return "GET", path, {"If-None-Match": '"0000000000000000"'}
        return "GET", path, {}

    async def _one(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        headers: dict[str, str],
        slow: bool,
    ) -> None:
        mode = self.mode
        started = time.monotonic()
        try:
            async with asyncio.timeout(FIRST_BYTE_GUARD):
                response = await session.request(method, self.base_url + path, headers=headers)
        except (aiohttp.ClientError, TimeoutError, OSError):
            waited = time.monotonic() - started
            self.record(mode, path, 0, "failed", min(waited, FIRST_BYTE_GUARD))
            return
        first_byte = time.monotonic() - started
        async with response:
            try:
                body = await self._read(response, slow)
            except (aiohttp.ClientError, TimeoutError, OSError):
                self.record(mode, path, response.status, "failed", first_byte)
                return
            outcome = self._judge(method, path, headers, response, body)
        if outcome == "wrong":
            self.wrong.append(f"{mode}: {method} {path} {headers} -> {response.status}")
        self.record(mode, path, response.status, outcome, first_byte)

    @staticmethod
    async def _read(response: aiohttp.ClientResponse, slow: bool) -> bytes:
        if not slow:
            return await response.read()
        parts = []
        async for chunk in response.content.iter_chunked(4096):  # bounded by the body
            parts.append(chunk)
            await asyncio.sleep(0.2)
        return b"".join(parts)

    def _judge(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        response: aiohttp.ClientResponse,
        body: bytes,
    ) -> str:
        genuine = self.catalogue.genuine(path)
        status = response.status
        if status == 304:
            matches = genuine is not None and headers.get("If-None-Match") == self.catalogue.etag(
                path
            )
            return "ok" if matches else "wrong"
        if status != 200:
            return "ok" if status == 404 and genuine is None else "failed"
        if genuine is None:
            return "wrong"  # a 200 for something upstream does not have
        if method == "HEAD":
            length = response.headers.get("Content-Length")
            etag = response.headers.get("ETag")
            if length is not None and int(length) != len(genuine):
                return "wrong"
            return "ok" if etag in (None, self.catalogue.etag(path)) else "wrong"
        return "ok" if body == genuine else "wrong"
