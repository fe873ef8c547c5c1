"""The hot path: fresh registry hits answered from bytes prepared once, before aiohttp.

A CI fleet asks for the same ``/packages/NAME`` files over and over, and each is
a few hundred bytes already held in memory. aiohttp's request machinery costs
several times what it takes to send them, so each connection starts here: a
plain GET or HEAD for a registry file that is in memory and fresh is answered
with a response assembled from pre-encoded parts, and a tarball this process
already knows is stored is sent with sendfile(2) behind pre-encoded headers.
Anything else (a miss, a stale entry, a body, HTTP/1.0, a malformed or unusual
request) hands
the connection, with every byte received so far, to aiohttp for good — so the
two never interleave answers on one connection, and all the policy (revalidation,
stale, errors) stays in one place.

Answers carry the same headers, access-log line and metrics as aiohttp's.

"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, cast

from ..cache.entries import Entry, Status, StoredFile
from ..cache.policy import Cache
from ..store.cachekey import CacheKey, Kind, key_for_request_path
from .accesslog import AccessLog
from .responses import etag_matches, file_headers, metadata_headers

if TYPE_CHECKING:
    from collections.abc import Callable

    from .metrics import Traffic

MAX_HEAD = 8192  # a longer request head goes to aiohttp, which enforces its own limits
_OK = b"HTTP/1.1 200 OK\r\n"
_NOT_MODIFIED = b"HTTP/1.1 304 Not Modified\r\n"
_ROUTES = {
    Kind.NAMES: "/names",
    Kind.VERSIONS: "/versions",
    Kind.PACKAGE: "/packages/{name}",
    Kind.TARBALL: "/tarballs/{filename}",
}


@dataclass(slots=True)
class Prepared:
    """One entry's answer, encoded once: only Date and Connection vary per request."""

    entry: Entry[object] | StoredFile
    key: CacheKey
    fresh_until: float
    tarball: bool
    package: str | None  # for the most-requested-packages metric
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
        accessed: Callable[[str], None] | None = None,
    ) -> None:
        self.cache = cache
        self.accessed = accessed  # records the access time eviction orders by
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
        """The prepared answer for a fresh in-memory entry or a known stored tarball,
        else None (aiohttp decides)."""
        prepared = self._prepared.get(target)
        if prepared is not None and self._still_good(prepared):
            return prepared
        key = prepared.key if prepared is not None else _key_for(target)
        if key is None:
            return None
        found: Entry[object] | StoredFile | None
        if key.kind is Kind.TARBALL:
            found = self.cache.known_file(key)
        else:
            found = self.cache.fresh_entry(key)
        if found is None:
            return None
        until = float("inf") if isinstance(found, StoredFile) else self.cache.fresh_until(found)
        prepared = _prepare(found, self.ttl, until)
        if len(self._prepared) > 100_000:
            self._prepared.clear()  # bounded; rebuilt on demand
        self._prepared[target] = prepared
        return prepared

    def _still_good(self, prepared: Prepared) -> bool:
        """Is this still what the cache holds, and (for registry files) still fresh?"""
        if prepared.tarball:
            return self.cache.known_file(prepared.key) is prepared.entry
        return (
            time.time() < prepared.fresh_until
            and self.cache.memory_entry(prepared.key) is prepared.entry
        )

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
            if prepared.package is not None:
                traffic.packages[prepared.package] += 1
        if prepared.tarball and self.accessed is not None:
            self.accessed(path)
        if self.access_log is not None:
            seconds = time.perf_counter() - started
            self.access_log.line(remote, method, path, status, "HIT", size, seconds, user_agent)


def _key_for(target: bytes) -> CacheKey | None:
    """The key of a request the fast path may answer: registry files and tarballs."""
    key = key_for_request_path(target.decode("ascii", "replace"))
    return key if key is not None and key.kind in _ROUTES else None


def _prepare(found: Entry[object] | StoredFile, ttl: float, fresh_until: float) -> Prepared:
    if isinstance(found, StoredFile):
        headers = file_headers(found, Status.HIT)
        size = found.size
    else:
        headers = metadata_headers(found, Status.HIT, ttl)
        size = len(found.body)
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    extra = f"Content-Length: {size}\r\nServer: hexproxy\r\n"
    not_modified = "".join(
        f"{k}: {v}\r\n" for k, v in headers.items() if k in ("ETag", "Cache-Control", "X-Cache")
    )
    kind = found.key.kind
    return Prepared(
        entry=found,
        key=found.key,
        fresh_until=fresh_until,
        tarball=kind is Kind.TARBALL,
        package=found.key.name if kind in (Kind.PACKAGE, Kind.TARBALL) else None,
        headers=(lines + extra).encode("latin-1"),
        not_modified_headers=(not_modified + "Server: hexproxy\r\n").encode("latin-1"),
        etag=found.etag,
        route=_ROUTES[found.key.kind],
    )


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
        self.busy = False  # a sendfile is under way; later requests wait in the buffer
        # The running sendfile task (the loop keeps only weak references to tasks).
        # While it runs, loop.sendfile pauses reading, so pipelined requests stay bounded.
        self.sending: asyncio.Task[None] | None = None
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
        while (
            not self.paused and not self.busy and self.inner is None and self.transport is not None
        ):
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
        """Answer one request head; False if aiohttp must take it."""
        started = time.perf_counter()
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[2] != b"HTTP/1.1" or parts[0] not in (b"GET", b"HEAD"):
            return False
        prepared = self.fast.lookup(parts[1])
        if prepared is None:
            return False
        fields = _fields(lines[1:])
        if fields is None:
            return False
        if_none_match, close, user_agent = fields
        not_modified = bool(if_none_match) and etag_matches(
            if_none_match.decode("latin-1"), prepared.etag
        )
        sendfile = isinstance(prepared.entry, StoredFile) and parts[0] == b"GET"
        fd = -1
        if sendfile and not not_modified:
            fd = self._open(prepared.entry)  # type: ignore[arg-type]
            if fd < 0:
                return False  # pruned or replaced: aiohttp re-reads the cache
        tail = b"Connection: close\r\n\r\n" if close else b"\r\n"
        if not_modified:
            out = _NOT_MODIFIED + prepared.not_modified_headers + self.fast.date() + tail
        else:
            out = _OK + prepared.headers + self.fast.date() + tail
            if parts[0] == b"GET" and isinstance(prepared.entry, Entry):
                out += prepared.entry.body
        assert self.transport is not None
        self.transport.write(out)
        status = 304 if not_modified else 200
        size = 0 if not_modified else _size(prepared)
        reply = _Reply(self, parts, status, size, started, user_agent, prepared, close)
        sent = self._sendfile_now(fd, size) if fd >= 0 else size
        if sent < 0:
            return True  # the client is gone; the transport is closed
        if sent < size:
            self.busy = True
            task = asyncio.get_running_loop().create_task(self._sendfile(fd, sent, size, reply))
            self.sending = task
        else:
            if fd >= 0:
                os.close(fd)
            reply.finish()
        return True

    def _sendfile_now(self, fd: int, size: int) -> int:
        """One non-blocking sendfile(2) straight to the socket: a small file usually goes
        whole, with no task and no loop round trip (asyncio's sendfile costs ~80 µs of
        bookkeeping per call). Returns bytes sent, or -1 after aborting a broken socket."""
        transport = self.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if transport is None or sock is None or transport.get_write_buffer_size():
            return 0  # the headers are still queued: the bytes must go after them
        try:
            return os.sendfile(sock.fileno(), fd, 0, size)
        except BlockingIOError:
            return 0
        except OSError:
            os.close(fd)
            transport.abort()
            return -1

    @staticmethod
    def _open(stored: StoredFile) -> int:
        # Synchronous on purpose, the one disk call the fast path makes: a file this
        # process just served has its inode cached, and a thread hop would cost more than
        # the answer (bench/). Everything else on the fast path is in memory.
        try:
            fd = os.open(stored.path, os.O_RDONLY)
        except OSError:
            return -1
        if os.fstat(fd).st_size != stored.size:
            os.close(fd)
            return -1
        return fd

    async def _sendfile(self, fd: int, offset: int, size: int, reply: _Reply) -> None:
        try:
            with open(fd, "rb", closefd=True) as file:  # noqa: ASYNC230 (wraps an open fd)
                if self.transport is None:
                    return
                loop = asyncio.get_running_loop()
                await loop.sendfile(self.transport, file, offset, size - offset)
        except (OSError, RuntimeError):
            if self.transport is not None:
                self.transport.abort()  # the client got a short body: a broken transfer
            return
        finally:
            self.busy = False
            self.sending = None
        reply.finish()
        self._serve()

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


class _Reply:
    """One answer on its way: once it is sent, ``finish`` logs and counts it, and closes
    the connection if the client asked."""

    __slots__ = (
        "close",
        "parts",
        "prepared",
        "protocol",
        "size",
        "started",
        "status",
        "user_agent",
    )

    def __init__(
        self, protocol: FastPathProtocol, parts: list[bytes], status: int, size: int,
        started: float, user_agent: bytes, prepared: Prepared, close: bool,
    ) -> None:  # fmt: skip
        self.protocol, self.parts, self.status, self.size = protocol, parts, status, size
        self.started, self.user_agent, self.prepared, self.close = (
            started,
            user_agent,
            prepared,
            close,
        )

    def finish(self) -> None:
        protocol = self.protocol
        protocol.fast.record(
            protocol.remote, self.parts[0].decode(), self.parts[1].decode("latin-1"),
            self.status, self.size if self.parts[0] == b"GET" else 0, self.started,
            self.user_agent.decode("latin-1"), self.prepared,
        )  # fmt: skip
        if self.close and protocol.transport is not None:
            protocol.transport.close()
            protocol.transport = None


def _fields(lines: list[bytes]) -> tuple[bytes, bool, bytes] | None:
    """If-None-Match, Connection: close and User-Agent; None if aiohttp must judge."""
    if_none_match = b""
    close = False
    user_agent = b""
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or name != name.strip():
            return None  # malformed: let aiohttp answer 400
        lower = name.lower()
        if lower in (b"content-length", b"transfer-encoding", b"expect", b"upgrade"):
            if lower != b"content-length" or value.strip() != b"0":
                return None
        elif lower == b"if-none-match":
            if_none_match = value.strip()
        elif lower == b"connection":
            close = b"close" in value.lower()
        elif lower == b"user-agent":
            user_agent = value.strip()
    return if_none_match, close, user_agent


def _size(prepared: Prepared) -> int:
    entry = prepared.entry
    return entry.size if isinstance(entry, StoredFile) else len(entry.body)
