"""The hot path: fresh registry hits and known tarballs answered before aiohttp.

Why it exists: a CI fleet asks for the same ``/packages/NAME`` files over and over, each
a few hundred bytes already held in memory, and aiohttp's request machinery costs several
times what it takes to send them (about 100 µs of CPU per request against about 20 here;
bench/README.md has the figures). So each connection starts here: a plain GET or HEAD for
a registry file that is in memory and fresh is answered from parts encoded once, and a
tarball this process already knows is stored is sent behind pre-encoded headers: from
memory if it is small and asked for again (a hot tarball), else with sendfile(2); with the
same headers, access-log line and metrics as aiohttp's answer.

What it may never do:
- answer a request that aiohttp would read differently. It takes a head only after
  llhttp and stricter rules accepted it (requesthead.py); anything refused there or
  merely unusual, and everything after it on that connection, goes to aiohttp with every
  byte received, so aiohttp answers it (and both never interleave answers on one
  connection);
- decide anything: freshness, revalidation, stale answers, errors and misses are the
  policy's (cache.py), reached through aiohttp. It answers only what the cache says is a
  HIT right now, and only with 200 or 304;
- hold memory of its own beyond small bounded maps of paths to keys, of heads, and of
  heads repeated byte for byte (_Hit, which refers to an entry's memo, never its bytes):
  each prepared answer, and a hot tarball's body, is kept on the cache entry it renders
  (entries.Memo), inside the cache's memory budget, and goes when the entry goes;
- serve a hot tarball's bytes once the file on disk changed: each answer first checks
  that the path still names the very file the bytes were read from (one stat);
- read a request body, or wait for upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, replace
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, cast

from ..cache.entries import Entry, Memo, Status, StoredFile
from ..cache.policy import Cache
from ..errors import HexproxyError
from ..store.cachekey import CacheKey, Kind, key_for_request_path
from .accesslog import AccessLog
from .requesthead import HeadReader, RequestHead, etag_matches, plain_start
from .responses import file_headers, metadata_headers

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from .metrics import Traffic

_OK = b"HTTP/1.1 200 OK\r\n"
_NOT_MODIFIED = b"HTTP/1.1 304 Not Modified\r\n"
# The kinds answered here, with the route label aiohttp's metrics give them.
_ROUTES = {
    Kind.NAMES: "/names",
    Kind.VERSIONS: "/versions",
    Kind.PACKAGE: "/packages/{name}",
    Kind.TARBALL: "/tarballs/{filename}",
}
MAX_KEYS = 10_000  # request targets remembered with their cache key
MAX_HEADS = 4096  # accepted request heads remembered with what they ask...
REMEMBERED_HEAD = 512  # ...if no longer than this (a CI client's are 100-300 bytes)
# Stored files up to this size are kept in memory on their second request; larger
# ones, and any that would take more than an eighth of a worker's memory budget, keep
# sendfile. Measured (CPU per answer, bench/README.md): from memory a 10 KB tarball
# costs ~20% less than sendfile (no open, fstat, close), a 100 KB one about the same,
# a 1 MB one ~30% more (the copy into the socket that sendfile does not make).
HOT_MAX = 64 * 1024
# Asked for a connection's socket before sendfile(2) of a file above WIDE_MIN (Linux
# doubles it and caps it at net.core.wmem_max, 4 MiB by default: the socket then holds
# up to 8 MiB of the file's page-cache pages, not a copy). 12 MB answers cost ~25% less
# CPU with it (bench/README.md).
SEND_BUFFER = 4 * 1024 * 1024
WIDE_MIN = 1024 * 1024
HOT_AFTER = 2  # requests (GET or HEAD) of one stored file before its bytes are read
# Bodies above this go out with one writev(2) of headers and body, not a joined copy.
_JOIN_MAX = 16 * 1024
_SERIALS = itertools.count(1)  # Prepared.serial: tells one prepared answer from its successor


@dataclass(slots=True)
class Prepared:
    """One entry's answer, encoded once: only Date and Connection vary per request.

    Kept on the entry it renders (entries.Memo), so it refers to the entry's parts, never
    to the entry itself: no cycle, and the memory goes the moment the cache drops it."""

    key: CacheKey
    fresh_until: float  # the entry's, which never changes: a revalidated entry is a new one
    body: bytes | None  # a registry file's or a hot tarball's bytes; None: sendfile
    path: Path | None  # the stored file
    # A hot tarball's file as read: (st_dev, st_ino, st_size, st_mtime_ns).
    identity: tuple[int, int, int, int] | None
    hits: int  # requests seen while it was on sendfile
    size: int
    package: str | None  # for the most-requested-packages metric
    headers: bytes  # "Name: value\r\n" lines, without Date
    not_modified_headers: bytes
    etag: str
    route: str
    serial: int  # new for every Prepared, replacements included (see _Hit)


def _renewed(prepared: Prepared, **changes: Any) -> Prepared:
    return replace(prepared, serial=next(_SERIALS), **changes)


class _Hit:
    """A request head, byte for byte, that was answered from memory, and what its answers
    are made of. A fleet sends the same few heads over and over; with this, repeating one
    costs a dict lookup and a few checks instead of the parse, route and cache lookup
    (bench/README.md has the figures). It refers to the entry's Memo, never the entry or
    its bytes: the cache clears a dropped entry's memo (cache/memory.py), so a hit on it
    simply finds nothing and the request takes the full path."""

    __slots__ = (
        "counts", "from_file", "head", "log_middle", "memo", "request", "second", "serial",
        "size", "status", "tail", "with_body",
    )  # fmt: skip

    def __init__(self, request: RequestHead, memo: Memo, second: int) -> None:
        self.request = request
        self.memo = memo
        # The second of the last full lookup: the full path runs at least once a second
        # per head, keeping the entry's place in the cache's least-recently-used order.
        self.second = second
        self.serial = 0  # the Prepared the fields below were derived from
        self.head = b""
        self.tail = b""
        self.with_body = False
        self.from_file = False  # the body is a stored file's, sent with sendfile(2)
        self.status = 0
        self.size = 0
        self.log_middle = ""
        self.counts: tuple[tuple[int, int], ...] = ()  # (Tally.counter, n)

    def derive(self, prepared: Prepared, traffic: Traffic | None) -> bool:
        """The parts of this head's answer from ``prepared``; False if that answer is
        neither one write of bytes in memory (up to _JOIN_MAX) nor a stored file too large
        to become hot (a smaller one is counted towards that on the full path, _stored)."""
        request = self.request
        get = request.method == b"GET"
        not_modified = bool(request.if_none_match) and etag_matches(
            request.if_none_match, prepared.etag
        )
        with_body = get and not not_modified
        from_file = with_body and prepared.body is None
        if from_file and (prepared.path is None or prepared.size <= HOT_MAX):
            return False
        if with_body and prepared.body is not None and len(prepared.body) > _JOIN_MAX:
            return False
        status = 304 if not_modified else 200
        size = prepared.size if with_body else 0
        if not_modified:
            self.head = _NOT_MODIFIED + prepared.not_modified_headers
        else:
            self.head = _OK + prepared.headers
        self.tail = b"Connection: close\r\n\r\n" if request.close else b"\r\n"
        self.with_body, self.from_file, self.status, self.size = with_body, from_file, status, size
        method, path = request.method.decode(), request.target.decode("ascii")
        self.log_middle = f' "{method} {path}" {status} HIT {size}B '
        keys: list[tuple[tuple[str | int, ...], int]] = [
            (("requests", prepared.route, status, "HIT"), 1)
        ]
        if with_body and status == 200:
            keys.append((("response_bytes", prepared.route), size))
        if prepared.package is not None:
            keys.append((("packages", prepared.package), 1))
        if traffic is not None:
            self.counts = tuple((traffic.counter(key), n) for key, n in keys)
        self.serial = prepared.serial
        return True


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
        self._keys: dict[bytes, CacheKey] = {}  # target -> key: saves re-parsing the path
        self._heads: dict[bytes, RequestHead] = {}  # see read()
        self.hits: dict[bytes, _Hit] = {}  # see _Hit; bounded like _heads
        self._heating: set[asyncio.Task[None]] = set()  # hot tarballs being read
        # Counted for tests and the benchmark: hot tarballs read into memory, and
        # answers sent from those bytes.
        self.hot_loads = 0
        self.hot_hits = 0
        self._date_second = 0
        self.date_line = b""  # for _date_second; date() brings it up to date

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self.date_line = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self.date_line

    async def close(self) -> None:
        """Let hot tarballs being read finish (each is one bounded file read)."""
        await asyncio.gather(*self._heating, return_exceptions=True)

    def read(self, reader: HeadReader, head: bytes) -> RequestHead | None:
        """What ``head`` asks, if the fast path may answer it (``reader`` is the
        connection's). A fleet's clients send byte-identical heads for the same file, and
        what a head says depends on its bytes alone (llhttp reads each from the start of
        a message), so accepted heads are remembered: each distinct one is read once per
        process, in a table bounded to MAX_HEADS x REMEMBERED_HEAD bytes."""
        request = self._heads.get(head)
        if request is None:
            request = reader.read(head)
            if request is not None and len(head) <= REMEMBERED_HEAD:
                if len(self._heads) >= MAX_HEADS:
                    del self._heads[next(iter(self._heads))]  # the oldest, one at a time
                self._heads[head] = request
        return request

    def lookup(self, target: bytes) -> Prepared | None:
        """The prepared answer for a fresh in-memory entry or a known stored tarball,
        else None (aiohttp decides)."""
        found = self.find(target)
        return None if found is None else found[1]

    def find(self, target: bytes) -> tuple[Memo, Prepared] | None:
        """``lookup``, with the memo of the entry the answer is kept on."""
        key = self._keys.get(target)
        if key is None:
            key = _key_for(target)
            if key is None:
                return None
        cache = self.cache
        found = cache.known_file(key) if key.kind is Kind.TARBALL else cache.memory_entry(key)
        if found is None:
            return None
        prepared = found.memo.value
        if not isinstance(prepared, Prepared):
            prepared = _prepare(found, self.ttl, cache.fresh_until(found))
            found.memo.value = prepared
            if len(self._keys) >= MAX_KEYS:
                del self._keys[next(iter(self._keys))]  # the oldest, one at a time
            # The cache's own key object: the dict lookups above then match by identity.
            self._keys[target] = found.key
        if isinstance(found, StoredFile):
            stored = self._stored(found, prepared)
            return None if stored is None else (found.memo, stored)
        if cache.clock() >= prepared.fresh_until:
            return None  # due for revalidation: the policy's
        return found.memo, prepared

    def remember(self, head: bytes, request: RequestHead, memo: Memo, prepared: Prepared) -> None:
        """``head`` (one whole request, all that was received) was just answered with
        ``prepared``: keep it as a _Hit if _Hit.derive takes that answer."""
        hit = self.hits.get(head)
        if hit is not None and hit.memo is memo:
            hit.second = self._date_second
            return
        if len(head) > REMEMBERED_HEAD:
            return
        hit = _Hit(request, memo, self._date_second)
        if not hit.derive(prepared, self.traffic):
            return
        if len(self.hits) >= MAX_HEADS and head not in self.hits:
            del self.hits[next(iter(self.hits))]  # the oldest, one at a time
        self.hits[head] = hit

    def record_repeat(self, hit: _Hit, remote: str, started: float, prepared: Prepared) -> None:
        """``record`` for a repeated head, from what its _Hit keeps."""
        traffic = self.traffic
        if traffic is not None:
            values = traffic.values
            for counter, n in hit.counts:
                values[counter] += n
        request = hit.request
        if prepared.path is not None and self.accessed is not None:
            self.accessed(request.target.decode("ascii"))
        access_log = self.access_log
        if access_log is not None:
            seconds = time.perf_counter() - started
            if access_log.json_format:
                method, path = request.method.decode(), request.target.decode("ascii")
                agent = request.user_agent.decode("ascii")
                access_log.line(remote, method, path, hit.status, "HIT", hit.size, seconds, agent)
            else:
                access_log.repeated(remote, hit.log_middle, seconds, time.time())

    def _stored(self, found: StoredFile, prepared: Prepared) -> Prepared | None:
        if prepared.identity is not None:
            now = _identity(prepared.path)
            if now == prepared.identity:
                return prepared
            if now is None or now[:3] != prepared.identity[:3]:
                # Replaced or removed on disk (`cache rm`, eviction): the bytes held are
                # not what the cache holds now. Drop them; aiohttp looks at the cache again.
                self._cool(found)
                return None
            # The same file, touched: the evictor records each access as the file's mtime.
            # Declining would hand this connection to aiohttp for good (a keep-alive
            # client then stays on the slow path); instead the bytes held are dropped,
            # this answer is sent from the file, and they are read and checked again.
            prepared = _renewed(prepared, body=None, identity=None, hits=0)
            self._hold(found, prepared)
        prepared.hits += 1
        hot = prepared.hits == HOT_AFTER and prepared.size <= HOT_MAX
        if hot and self.cache.memory_fits(prepared.size):
            task = asyncio.get_running_loop().create_task(self._heat(found, prepared))
            self._heating.add(task)
            task.add_done_callback(self._heating.discard)
        return prepared

    async def _heat(self, found: StoredFile, prepared: Prepared) -> None:
        """Keep a stored file's bytes on its entry, read in a thread and checked against
        the checksum it was stored with."""
        assert prepared.path is not None
        read = await asyncio.to_thread(_read_whole, prepared.path, found.size, found.sha256)
        if read is None or found.memo.value is not prepared:
            return  # changed meanwhile: stay on sendfile
        body, identity = read
        self._hold(found, _renewed(prepared, body=body, identity=identity))
        self.hot_loads += 1

    def _cool(self, found: StoredFile) -> None:
        self._hold(found, None)
        self.cache.forget(found.key)

    def _hold(self, found: StoredFile, prepared: Prepared | None) -> None:
        """Keep ``prepared`` on a stored file's entry; the bytes it holds (a hot
        tarball's, if any) count against the cache's memory budget."""
        found.memo.value = prepared
        found.memo.size = len(prepared.body) if prepared and prepared.body is not None else 0
        self.cache.recount(found)

    def record(
        self, remote: str, request: RequestHead, status: int, size: int, started: float,
        prepared: Prepared,
    ) -> None:  # fmt: skip
        """The same bookkeeping aiohttp's path does: metrics and one access-log line."""
        method = request.method.decode()
        path = request.target.decode("ascii")
        traffic = self.traffic
        if traffic is not None:
            add = traffic.add
            add(("requests", prepared.route, status, "HIT"))
            if method == "GET" and status == 200:
                add(("response_bytes", prepared.route), size)
            if prepared.package is not None:
                add(("packages", prepared.package))
        if prepared.key.kind is Kind.TARBALL and self.accessed is not None:
            self.accessed(path)
        if self.access_log is not None:
            seconds = time.perf_counter() - started
            user_agent = request.user_agent.decode("ascii")
            self.access_log.line(remote, method, path, status, "HIT", size, seconds, user_agent)


def _key_for(target: bytes) -> CacheKey | None:
    """The key of a target the fast path serves, by the one mapping the routes use."""
    try:
        key = key_for_request_path(target.decode("ascii"))
    except HexproxyError:
        return None  # aiohttp answers it (400)
    return key if key is not None and key.kind in _ROUTES else None


def _identity(path: Path | None) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path) if path is not None else None
    except OSError:
        return None
    return None if st is None else (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_whole(
    path: Path, size: int, sha256: str
) -> tuple[bytes, tuple[int, int, int, int]] | None:
    """(In a thread.) The file's bytes and identity, if it is still the one stored."""
    try:
        with open(path, "rb") as file:
            st = os.fstat(file.fileno())
            body = file.read(size + 1)
    except OSError:
        return None
    if len(body) != size or st.st_size != size or hashlib.sha256(body).hexdigest() != sha256:
        return None
    return body, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


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
        key=found.key,
        fresh_until=fresh_until,
        body=None if isinstance(found, StoredFile) else found.body,
        path=found.path if isinstance(found, StoredFile) else None,
        size=size,
        identity=None,
        hits=0,
        package=found.key.name if kind in (Kind.PACKAGE, Kind.TARBALL) else None,
        headers=(lines + extra).encode("latin-1"),
        not_modified_headers=(not_modified + "Server: hexproxy\r\n").encode("latin-1"),
        etag=found.etag,
        route=_ROUTES[kind],
        serial=next(_SERIALS),
    )


_Queued = tuple[bytes, RequestHead, Prepared | None]


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
        self.buffer = b""  # received, not yet read as a head
        # Heads read, waiting for their answer while a sendfile runs or the client does not
        # read (the answer looked up with them, or None to look up again).
        self.queue: deque[_Queued] = deque()
        self.paused = False
        self.busy = False  # a file is being sent; later requests wait in the queue
        self.file: _File | None = None  # the stored file being sent, after its headers
        # A dup of the socket's fd, for the writer that sends the rest of a large file
        # (see _send_rest); kept for the connection's life once made.
        self.dup = -1
        self.reading_paused = False
        self.remote = "-"
        self.heads = HeadReader()
        self.wide = False  # the send buffer was enlarged for a large file

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
        if not (self.buffer or self.queue or self.busy or self.paused or self.transport is None):
            hit = self.fast.hits.get(data)
            if hit is not None and self._repeat(hit):
                return
        self.buffer += data
        self._serve()

    def _repeat(self, hit: _Hit) -> bool:
        """Answer a head answered from memory before (all that was received, nothing
        before it pending), if its entry is still held and fresh; False: the full path."""
        prepared = hit.memo.value
        if not isinstance(prepared, Prepared):
            return False  # dropped, or not prepared again yet
        started = time.perf_counter()
        fast = self.fast
        if int(time.time()) != hit.second or fast.cache.clock() >= prepared.fresh_until:
            return False  # a full lookup is due (see _Hit.second), or revalidation
        if hit.serial != prepared.serial and not hit.derive(prepared, fast.traffic):
            return False
        if prepared.identity is not None and _identity(prepared.path) != prepared.identity:
            return False  # a hot tarball's file changed on disk: _stored decides
        transport = self.transport
        assert transport is not None
        if hit.from_file:
            assert prepared.path is not None
            fd = self._open(prepared.path, prepared.size)
            if fd < 0:
                return False  # pruned or replaced: the full path looks again
            if hit.size > WIDE_MIN and not self.wide:
                self._widen()
            reply = _Reply(self, hit.request, hit.status, hit.size, started, prepared, hit)
            self._send_file(b"".join((hit.head, fast.date_line, hit.tail)), fd, hit.size, reply)
            return True
        if hit.with_body:
            assert prepared.body is not None
            transport.write(b"".join((hit.head, fast.date_line, hit.tail, prepared.body)))
            if prepared.path is not None:
                fast.hot_hits += 1
        else:
            transport.write(b"".join((hit.head, fast.date_line, hit.tail)))
        fast.record_repeat(hit, self.remote, started, prepared)
        if hit.request.close:
            transport.close()
            self.transport = None
        return True

    def _serve(self) -> None:
        while (
            not self.paused and not self.busy and self.inner is None and self.transport is not None
        ):
            if not self.queue:
                buffer = self.buffer
                end = buffer.find(b"\r\n\r\n")
                if end >= 0 and end + 4 == len(buffer):  # one whole request: the usual read
                    request = self.fast.read(self.heads, buffer)
                    found = None if request is None else self.fast.find(request.target)
                    if request is None or found is None or not self._answer(request, found[1]):
                        self._hand_over()
                        return
                    self.buffer = b""
                    if self.transport is not None:  # (not aborted: a file may still be on its way)
                        self.fast.remember(buffer, request, *found)
                    continue
                if not buffer or not self._take_buffer() or not self.queue:
                    return  # nothing to answer yet, or handed over
            head, request, prepared = self.queue[0]
            if prepared is None:  # read before a pause: the cache may have moved on
                prepared = self.fast.lookup(request.target)
            if prepared is None or not self._answer(request, prepared):
                self._hand_over()
                return
            self.queue.popleft()
        for i, (head, request, _) in enumerate(self.queue):
            self.queue[i] = (head, request, None)  # looked up again when they are answered

    def _take_buffer(self) -> bool:
        """Read every complete head buffered. aiohttp answers a read that holds a head it
        refuses with one 400 and nothing else, and refuses data after ``Connection:
        close``; so the fast path takes the heads only if it can answer all of them, and
        otherwise hands over everything it has not answered. False once handed over."""
        buffer, start = self.buffer, 0
        taken: list[_Queued] = []
        while (end := buffer.find(b"\r\n\r\n", start)) >= 0:
            head = buffer[start : end + 4]
            request = self.fast.read(self.heads, head)
            prepared = self.fast.lookup(request.target) if request is not None else None
            if request is None or prepared is None:
                self._hand_over()
                return False
            taken.append((head, request, prepared))
            start = end + 4
            if request.close and start < len(buffer):
                self._hand_over()
                return False
        rest = buffer[start:]
        if not plain_start(rest):
            self._hand_over()  # too long, or no head we take: aiohttp answers now
            return False
        self.queue.extend(taken)
        self.buffer = rest
        return True

    def _answer(self, request: RequestHead, prepared: Prepared) -> bool:
        """Answer one request; False if aiohttp must take it."""
        started = time.perf_counter()
        not_modified = bool(request.if_none_match) and etag_matches(
            request.if_none_match, prepared.etag
        )
        get = request.method == b"GET"
        fd = -1
        body = prepared.body if get and not not_modified else None
        if get and not not_modified and body is None and prepared.path is not None:
            fd = self._open(prepared.path, prepared.size)
            if fd < 0:
                return False  # pruned or replaced: aiohttp re-reads the cache
        tail = b"Connection: close\r\n\r\n" if request.close else b"\r\n"
        if not_modified:
            out = _NOT_MODIFIED + prepared.not_modified_headers + self.fast.date() + tail
        else:
            out = _OK + prepared.headers + self.fast.date() + tail
        if body is not None and prepared.path is not None:
            self.fast.hot_hits += 1
        assert self.transport is not None
        if body is None:
            if fd < 0:
                self.transport.write(out)  # else _send_file writes it, then the file
        elif len(body) <= _JOIN_MAX:
            self.transport.write(out + body)
        else:
            self._write_both(out, body)
        status = 304 if not_modified else 200
        size = prepared.size if get and not not_modified else 0
        reply = _Reply(self, request, status, size, started, prepared)
        if fd >= 0 and size > WIDE_MIN and not self.wide:
            self._widen()
        if fd >= 0:
            self._send_file(out, fd, size, reply)
        else:
            reply.finish()
        return True

    def _widen(self) -> None:
        """A bigger socket send buffer for a large file: each sendfile(2) then moves
        more, and the loop wakes up fewer times per file (each wake-up, with its
        epoll_ctl calls and loop iteration, costs about as much CPU as the kernel's
        copy of a few hundred KB). Once per connection."""
        self.wide = True
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)

    def _write_both(self, head: bytes, body: bytes) -> None:
        """Headers and a large body in one writev(2), without joining them (a copy of
        up to HOT_MAX bytes); what the socket does not take goes to the transport."""
        transport = self.transport
        assert transport is not None
        sent = self._write_now([head, body])
        if sent < 0:
            transport.abort()
        elif sent < len(head):
            transport.write(head[sent:])
            transport.write(body)
        elif sent < len(head) + len(body):
            transport.write(memoryview(body)[sent - len(head) :])

    def _write_now(self, parts: list[bytes]) -> int:
        """Write ``parts`` straight to the socket, as much as it takes now: what the
        transport still holds must go first, so nothing is written then. Bytes written,
        or -1 if the socket failed (the client is gone)."""
        transport = self.transport
        assert transport is not None
        if transport.get_write_buffer_size():
            return 0
        try:
            return os.writev(transport.get_extra_info("socket").fileno(), parts)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            return -1

    def _send_file(self, head: bytes, fd: int, size: int, reply: _Reply) -> None:
        """Headers, then a stored file with sendfile(2) straight to the socket; neither
        loop's loop.sendfile (uvloop has none for transports; asyncio's costs ~80 µs of
        bookkeeping per call). The file's first byte may go only after the last of the
        headers: they are written to the socket here too (uvloop's transport would hold
        them until the end of the loop's iteration), and if the socket does not take them
        whole, the file waits for the transport to pass on the rest. A small file usually
        goes whole at once, with no loop round trip; the rest of a larger one follows from
        a writer callback (_send_rest)."""
        transport = self.transport
        assert transport is not None
        sock_fd = transport.get_extra_info("socket").fileno()
        file = self.file = _File(fd, size, reply)
        written = self._write_now([head])
        if written < 0:
            self._drop_file()
            return
        if written < len(head):
            transport.write(head[written:])
        elif size:
            self._send_some(sock_fd)
        if self.file is None:
            return  # failed: the connection is aborted
        if file.offset < size:
            self._send_rest(transport)
        else:
            self._end_file()
            reply.finish()

    def _send_some(self, sock_fd: int) -> None:
        """One non-blocking sendfile(2) of what is left of the file (one call: a short
        count means the socket is full, and another would only fail with EAGAIN)."""
        file = self.file
        assert file is not None
        try:
            sent = os.sendfile(sock_fd, file.fd, file.offset, file.size - file.offset)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop_file()  # the client is gone
            return
        if sent == 0:
            self._drop_file()  # the file is shorter than the headers said
            return
        file.offset += sent

    def _send_rest(self, transport: asyncio.Transport) -> None:
        """The rest of a file that the socket did not take at once, from a writer callback
        that runs whenever the socket has room, registered once for the whole file (not
        once per partial send, as asyncio's sendfile does), on a dup of the socket's fd:
        both loops refuse a writer on the fd a transport owns. Reading stops meanwhile,
        so pipelined requests wait in the kernel, not in memory."""
        self.busy = True
        if not self.reading_paused:
            transport.pause_reading()
            self.reading_paused = True
        try:
            if self.dup < 0:
                self.dup = os.dup(transport.get_extra_info("socket").fileno())
            asyncio.get_running_loop().add_writer(self.dup, self._write_ready)
        except OSError:  # out of file descriptors
            self.busy = False
            self._drop_file()

    def _write_ready(self) -> None:
        """The writer callback: more of the file; once it is sent, the next requests."""
        file, transport = self.file, self.transport
        if file is None or transport is None or transport.get_write_buffer_size():
            return  # (the transport still passes the headers on: they go first)
        self._send_some(self.dup)
        if self.file is None or file.offset < file.size:
            return  # failed (aborted), or more when the socket has room again
        self._end_file()
        file.reply.finish()  # closes the connection if the client asked
        if self.transport is not None and self.reading_paused and not self.paused:
            self.reading_paused = False
            self.transport.resume_reading()
        self._serve()

    def _end_file(self) -> None:
        """The file's transfer is over (sent, failed or cut): its writer and fd go."""
        file, self.file = self.file, None
        if self.busy:
            self.busy = False
            asyncio.get_running_loop().remove_writer(self.dup)
        if file is not None:
            os.close(file.fd)

    def _drop_file(self) -> None:
        """A transfer that cannot finish: the connection is aborted, so the client sees a
        body shorter than its Content-Length, never one that looks complete."""
        self._end_file()
        if self.transport is not None:
            self.transport.abort()
            self.transport = None  # nothing more is answered on it

    @staticmethod
    def _open(path: Path, size: int) -> int:
        # Synchronous on purpose, the one disk call the fast path makes: a file this
        # process just served has its inode cached, and a thread hop would cost more than
        # the answer (bench/). Everything else on the fast path is in memory.
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return -1
        if os.fstat(fd).st_size != size:
            os.close(fd)
            return -1
        return fd

    def _hand_over(self) -> None:
        """From now on aiohttp owns this connection, starting with every byte received and
        not yet answered."""
        assert self.transport is not None
        self.inner = self.make_inner()
        self.inner.connection_made(self.transport)
        if self.paused:
            self.inner.pause_writing()
        data = b"".join(head for head, _, _ in self.queue) + self.buffer
        self.queue.clear()
        self.buffer = b""
        if data:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.inner is not None:
            return bool(self.inner.eof_received())
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.inner.connection_lost(exc)
        self._end_file()  # cut mid-file: the writer and the file's fd go with it
        if self.dup >= 0:
            os.close(self.dup)
            self.dup = -1
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
        if self.transport is not None and self.reading_paused and self.file is None:
            self.reading_paused = False
            self.transport.resume_reading()
        if self.inner is not None:
            self.inner.resume_writing()
        else:
            self._serve()


@dataclass(slots=True)
class _File:
    """A stored file on its way to the socket, after its headers."""

    fd: int
    size: int
    reply: _Reply
    offset: int = 0


class _Reply:
    """One answer on its way: once it is sent, ``finish`` logs and counts it, and closes
    the connection if the client asked."""

    __slots__ = ("hit", "prepared", "protocol", "request", "size", "started", "status")

    def __init__(
        self, protocol: FastPathProtocol, request: RequestHead, status: int, size: int,
        started: float, prepared: Prepared, hit: _Hit | None = None,
    ) -> None:  # fmt: skip
        self.protocol, self.request, self.status = protocol, request, status
        self.size, self.started, self.prepared = size, started, prepared
        self.hit = hit  # a repeated head's: counted and logged from what it keeps

    def finish(self) -> None:
        protocol = self.protocol
        if self.hit is not None:
            protocol.fast.record_repeat(self.hit, protocol.remote, self.started, self.prepared)
        else:
            protocol.fast.record(
                protocol.remote, self.request, self.status, self.size, self.started,
                self.prepared,
            )  # fmt: skip
        if self.request.close and protocol.transport is not None:
            protocol.transport.close()
            protocol.transport = None
