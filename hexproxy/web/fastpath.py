"""The hot path: fresh registry hits answered from bytes prepared once, before aiohttp.

A CI fleet asks for the same ``/packages/NAME`` files over and over, and each is
a few hundred bytes already held in memory. aiohttp's request machinery costs
several times what it takes to send them, so each connection starts here: a
plain GET or HEAD for a registry file that is in memory and fresh is answered
with a response assembled from pre-encoded parts. Anything else (a miss, a
stale entry, a tarball, a body, HTTP/1.0, a malformed or unusual request) hands
the connection, with every byte received so far, to aiohttp for good — so the
two never interleave answers on one connection, and all the policy (revalidation,
stale, errors) stays in one place.

Answers carry the same headers, access-log line and metrics as aiohttp's.

"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, cast

from ..cache import Cache, Entry, Status
from ..keys import NAMES, VERSIONS, CacheKey, Kind
from ..registry import is_valid_name
from .accesslog import AccessLog
from .responses import small_headers

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..metrics import Traffic

MAX_HEAD = 8192  # a longer request head goes to aiohttp, which enforces its own limits
_OK = b"HTTP/1.1 200 OK\r\n"
_NOT_MODIFIED = b"HTTP/1.1 304 Not Modified\r\n"
_ROUTES = {Kind.NAMES: "/names", Kind.VERSIONS: "/versions", Kind.PACKAGE: "/packages/{name}"}


@dataclass(slots=True)
class Prepared:
    """One entry's answer, encoded once: only Date and Connection vary per request."""

    entry: Entry
    headers: bytes  # "Name: value\r\n" lines, without Date
    not_modified_headers: bytes
    etag: str
    route: str


class FastPath:
    """Shared by every connection of one process."""

    def __init__(
        self,
        cache: Cache,
        ttl: float,
        access_log: AccessLog | None,
        traffic: Traffic | None,
    ) -> None:
        self.cache = cache
        self.ttl = ttl
        self.access_log = access_log
        self.traffic = traffic
        self._prepared: dict[bytes, Prepared] = {}
        self._date_second = 0
        self._date = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._date

    def lookup(self, target: bytes) -> Prepared | None:
        """The prepared answer for a fresh in-memory entry, else None (aiohttp decides)."""
        prepared = self._prepared.get(target)
        key = prepared.entry.key if prepared is not None else _key_for(target)
        if key is None:
            return None
        entry = self.cache.fresh_entry(key)
        if entry is None:
            return None
        if prepared is None or prepared.entry is not entry:
            prepared = _prepare(entry, self.ttl)
            if len(self._prepared) > 100_000:
                self._prepared.clear()  # bounded; rebuilt on demand
            self._prepared[target] = prepared
        return prepared

    def record(
        self, remote: str, method: str, path: str, status: int, size: int, started: float,
        user_agent: str, prepared: Prepared,
    ) -> None:  # fmt: skip
        """The same bookkeeping aiohttp's path does: metrics and one access-log line."""
        traffic = self.traffic
        if traffic is not None:
            traffic.requests[(prepared.route, status, "HIT")] += 1
            if method == "GET" and status == 200:
                traffic.bytes[prepared.route] += size
            if prepared.entry.key.kind is Kind.PACKAGE:
                traffic.packages[prepared.entry.key.name] += 1
        if self.access_log is not None:
            seconds = time.perf_counter() - started
            self.access_log.line(remote, method, path, status, "HIT", size, seconds, user_agent)


def _key_for(target: bytes) -> CacheKey | None:
    if target == b"/names":
        return NAMES
    if target == b"/versions":
        return VERSIONS
    if target.startswith(b"/packages/"):
        name = target[10:].decode("ascii", "replace")
        if is_valid_name(name):
            return CacheKey(Kind.PACKAGE, name)
    return None


def _prepare(entry: Entry, ttl: float) -> Prepared:
    headers = small_headers(entry, Status.HIT, ttl)
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    extra = f"Content-Length: {len(entry.body)}\r\nServer: hexproxy\r\n"
    not_modified = "".join(
        f"{k}: {v}\r\n" for k, v in headers.items() if k in ("ETag", "Cache-Control", "X-Cache")
    )
    return Prepared(
        entry=entry,
        headers=(lines + extra).encode("latin-1"),
        not_modified_headers=(not_modified + "Server: hexproxy\r\n").encode("latin-1"),
        etag=entry.etag,
        route=_ROUTES[entry.key.kind],
    )


def _matches(header: bytes, etag: str) -> bool:
    for candidate in header.decode("latin-1").split(","):
        value = candidate.strip()
        if value == "*" or value.removeprefix("W/") == etag:
            return True
    return False


class FastPathProtocol(asyncio.Protocol):
    """One client connection: fast answers until the first request aiohttp must see."""

    def __init__(
        self,
        fast: FastPath,
        make_inner: Callable[[], asyncio.Protocol],
        registry: set[FastPathProtocol] | None = None,
    ) -> None:
        self.fast = fast
        self.make_inner = make_inner
        self.registry = registry
        self.inner: Any = None
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.paused = False
        self.reading_paused = False
        self.remote = "-"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence the cast.
        self.transport = cast("asyncio.Transport", transport)
        if self.registry is not None:
            self.registry.add(self)
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) else "-"

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)
            return
        self.buffer += data
        self._serve()

    def _serve(self) -> None:
        while not self.paused and self.inner is None and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self._hand_over()
                return
            if not self._answer(self.buffer[:end]):
                self._hand_over()
                return
            self.buffer = self.buffer[end + 4 :]

    def _answer(self, head: bytes) -> bool:
        """Send the answer for one request head; False if aiohttp must take it."""
        started = time.perf_counter()
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[2] != b"HTTP/1.1" or parts[0] not in (b"GET", b"HEAD"):
            return False
        prepared = self.fast.lookup(parts[1])
        if prepared is None:
            return False
        if_none_match = b""
        close = False
        user_agent = b""
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or name != name.strip():
                return False  # malformed: let aiohttp answer 400
            lower = name.lower()
            if lower in (b"content-length", b"transfer-encoding", b"expect", b"upgrade"):
                if lower != b"content-length" or value.strip() != b"0":
                    return False
            elif lower == b"if-none-match":
                if_none_match = value.strip()
            elif lower == b"connection":
                close = b"close" in value.lower()
            elif lower == b"user-agent":
                user_agent = value.strip()
        self._send(parts[0], prepared, if_none_match, close)
        body = len(prepared.entry.body)
        status = 304 if if_none_match and _matches(if_none_match, prepared.etag) else 200
        self.fast.record(
            self.remote, parts[0].decode(), parts[1].decode("latin-1"), status,
            body if status == 200 else 0, started, user_agent.decode("latin-1"), prepared,
        )  # fmt: skip
        return True

    def _send(self, method: bytes, prepared: Prepared, if_none_match: bytes, close: bool) -> None:
        assert self.transport is not None
        tail = b"Connection: close\r\n\r\n" if close else b"\r\n"
        if if_none_match and _matches(if_none_match, prepared.etag):
            out = _NOT_MODIFIED + prepared.not_modified_headers + self.fast.date() + tail
        else:
            out = _OK + prepared.headers + self.fast.date() + tail
            if method == b"GET":
                out += prepared.entry.body
        self.transport.write(out)
        if close:
            self.transport.close()
            self.transport = None

    def _hand_over(self) -> None:
        """From now on aiohttp owns this connection, starting with what is buffered."""
        assert self.transport is not None
        self.inner = self.make_inner()
        self.inner.connection_made(self.transport)
        if self.paused:
            self.inner.pause_writing()
        data, self.buffer = self.buffer, b""
        if data:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.inner is not None:
            return bool(self.inner.eof_received())
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.inner.connection_lost(exc)
        self.transport = None
        if self.registry is not None:
            self.registry.discard(self)

    def pause_writing(self) -> None:
        # A client that does not read: stop reading its requests until it does.
        self.paused = True
        if self.inner is not None:
            self.inner.pause_writing()
        elif self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        if self.inner is not None:
            self.inner.resume_writing()
        else:
            self._serve()
