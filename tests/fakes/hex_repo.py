"""A fake repo.hex.pm: a real aiohttp server on 127.0.0.1 serving a repository built at
test time, that can be told to misbehave in every way a real upstream does.

Tests read ``requests`` / ``count(path)`` to assert how often the proxy went upstream.

Organizations' files live under ``repos/ORG/`` in ``files`` and are served only to an
``authorization`` header that ``grant`` gave that organization, as hex.pm does: 401
without one or with an unknown (or revoked) one, 403 for a key of another organization.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from hexproxy.registry import decode_signed
from hexproxy.registry._pb import hex_registry_pb2 as pb

# What a path can be told to do instead of answering normally.
FAULTS = (
    "500",  # answer 500
    "503",  # answer 503
    "hang",  # accept the request, never answer
    "truncate",  # declare the full length, send half, close
    "reset",  # send headers, then reset the connection
    "trickle",  # send the body a few bytes at a time, slowly
    "flip",  # flip one byte in the middle of the body
    "bad_signature",  # registry file with one signature byte changed (still valid gzip)
    "404",  # answer 404
)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeHexRepo:
    files: dict[str, bytes]
    requests: list[Seen] = field(default_factory=list)
    faults: dict[str, str] = field(default_factory=dict)  # path (or "*") -> fault
    swaps: dict[str, str] = field(default_factory=dict)  # path -> path whose bytes to serve
    delay: float = 0.0  # seconds before each answer (a throttled upstream)
    trickle_delay: float = 0.05
    hang_event: asyncio.Event = field(default_factory=asyncio.Event)
    # authorization header value -> the organizations it may read
    keys: dict[str, set[str]] = field(default_factory=dict)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    def count(self, path: str) -> int:
        return sum(1 for seen in self.requests if seen.path == path)

    def counts(self) -> Counter[str]:
        return Counter(seen.path for seen in self.requests)

    def fail(self, fault: str, path: str = "*") -> None:
        assert fault in FAULTS, fault
        self.faults[path] = fault

    def heal(self) -> None:
        self.faults.clear()
        self.swaps.clear()
        self.hang_event.set()
        self.hang_event = asyncio.Event()

    def grant(self, key: str, *orgs: str) -> None:
        self.keys.setdefault(key, set()).update(orgs)

    def revoke(self, key: str) -> None:
        self.keys.pop(key, None)

    def publish(self, path: str, data: bytes) -> None:
        self.files[path.lstrip("/")] = data

    @staticmethod
    def etag_of(data: bytes) -> str:
        return '"' + hashlib.md5(data).hexdigest() + '"'

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests.append(Seen(request.method, path, dict(request.headers)))
        if self.delay:
            await asyncio.sleep(self.delay)
        fault = self.faults.get(path) or self.faults.get("*")
        if fault == "hang":
            await self.hang_event.wait()
            raise web.HTTPServiceUnavailable()
        if fault in ("500", "503", "404"):
            return web.Response(status=int(fault), text="fault injected\n")
        if path.startswith("/repos/"):
            refused = self._refuse(path.split("/")[2], request.headers.get("Authorization"))
            if refused is not None:
                return refused
        body = self.files.get(self.swaps.get(path, path).lstrip("/"))
        if body is None:
            return web.Response(status=404, text="not found\n")
        etag = self.etag_of(body)
        if request.headers.get("If-None-Match") == etag and fault is None:
            return web.Response(status=304, headers={"ETag": etag})
        if fault == "flip":
            body = flip_byte(body)
        elif fault == "bad_signature":
            body = corrupt_signature(body)
        headers = {
            "ETag": etag,
            "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT",
            "Content-Type": "application/octet-stream",
        }
        if fault in ("truncate", "reset", "trickle"):
            return await self._misbehave(request, fault, body, headers)
        return web.Response(body=body, headers=headers)

    def _refuse(self, org: str, key: str | None) -> web.Response | None:
        """hex.pm's answers for an organization's files (hexpm auth_helpers.ex wording)."""
        if key is None:
            status, text = 401, "missing authentication information"
        elif key not in self.keys:
            status, text = 401, "invalid API key"
        elif org not in self.keys[key]:
            status, text = 403, "account not authorized for this action"
        else:
            return None
        headers = {"x-hex-message": f'"{text}"; level=fatal'}
        if status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="hex"'
        return web.Response(status=status, text=text + "\n", headers=headers)

    async def _misbehave(
        self, request: web.Request, fault: str, body: bytes, headers: dict[str, str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        if fault == "trickle":
            for start in range(0, len(body), 16):
                await response.write(body[start : start + 16])
                await asyncio.sleep(self.trickle_delay)
            await response.write_eof()
            return response
        if fault == "truncate":
            await response.write(body[: len(body) // 2])
        assert request.transport is not None
        request.transport.abort() if fault == "reset" else request.transport.close()
        return response


def flip_byte(data: bytes, at: int | None = None) -> bytes:
    index = len(data) // 2 if at is None else at
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def corrupt_signature(body: bytes) -> bytes:
    """The same registry file, validly gzipped, with one signature byte changed."""
    payload, signature = decode_signed(gzip.decompress(body))
    signed = pb.Signed(payload=payload, signature=flip_byte(signature))
    return gzip.compress(signed.SerializeToString(), mtime=0)


class BlackHole:
    """A TCP server that accepts connections and never says a word."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)

    @property
    def accepted(self) -> int:
        """Connections accepted so far: how often a client tried its luck."""
        return len(self._writers)

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
