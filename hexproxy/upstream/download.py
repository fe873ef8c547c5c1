"""One streaming fetch of an immutable object (tarball, docs, installer file), shared by
every client that asks for it while it runs.

The fetch runs as its own task, independent of any client connection: it
streams upstream bytes into a temp file while hashing them, and clients read
that file behind it (so each gets a low time to first byte and memory does not
grow with the file size or the number of clients). Clients are always held one
byte short until the digest has been checked; if it fails they are cut off,
so nobody ever receives a complete bad file, and the temp file is deleted.

If the disk refuses writes (full, read-only) the fetch keeps going with the
rest of the bytes in memory (bounded by the size limit) so clients are still
served, and nothing is stored.

Across worker processes a lock file makes sure only one of them fetches; the
others wait for it and then serve the stored copy, or, when it failed, the verdict
it left (``recheck``: a 404 remembered, a backoff), which it records before its turn
ends (``settle``). A worker killed mid-fetch lets go of the lock as it dies, and the
next in line fetches. A fetch made with a client's
credential (an organization's file) never takes that shortcut: another worker's
copy was authorized by another credential, so it asks upstream itself.

The clients of the workers waiting for the lock are not held for that whole time:
the cache answers them after ``inflight_wait`` (see ``Cache.started``). Streaming
the other worker's growing temp file instead would take a cross-process protocol
for "these bytes are verified now" (the one thing that must never go wrong), to
save some clients a retry; mix retries a failed GET twice.

Every file operation runs in a thread: the event loop never waits for the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiofiles
import aiohttp

from ..errors import ChecksumMismatch, HexproxyError, TooLarge, UpstreamTimeout
from ..store.cachekey import CacheKey
from ..store.diskio import open_fd
from ..store.locks import NoTurn, turn
from ..store.storage import FileStorage, Meta
from .client import Upstream

log = logging.getLogger("hexproxy.download")

CHUNK = 256 * 1024

Opener = Callable[[], AbstractAsyncContextManager[aiohttp.ClientResponse]]
# What the other workers learned about this object, asked once this one's turn has come
# and before it asks upstream: raises to answer with that instead (a 404 remembered).
Recheck = Callable[[], Awaitable[None]]
# Told of a failed fetch while the turn is still held, so the worker whose turn is next
# finds the verdict (a 404, a backoff) instead of asking upstream again.
Settle = Callable[[HexproxyError], Awaitable[None]]


class Download:
    def __init__(
        self,
        key: CacheKey,
        *,
        storage: FileStorage,
        upstream: Upstream,
        expected_sha256: bytes | None,
        max_size: int,
        lock_timeout: float,
        on_verification_failure: Callable[[CacheKey, HexproxyError], None] | None = None,
        expected_digest: tuple[str, bytes] | None = None,
        open_upstream: Opener | None = None,
        adopt_stored: bool = True,
        recheck: Recheck | None = None,
        settle: Settle | None = None,
    ) -> None:
        self.key = key
        self.storage = storage
        self.upstream = upstream
        self.expected = expected_sha256
        # A second digest to match, as (hashlib algorithm, digest): installer builds are
        # named with a sha512 by their signed CSV, not a sha256.
        self.expected_digest = expected_digest
        self.max_size = max_size
        self.lock_timeout = lock_timeout
        self.on_verification_failure = on_verification_failure
        # How to open the upstream response (default: a plain GET of the key); it raises
        # for any answer that is not the object itself.
        self.open_upstream: Opener = open_upstream or (lambda: upstream.open(key))
        self.adopt_stored = adopt_stored
        self.recheck = recheck
        self.settle = settle
        self.upstream_etag: str | None = None
        self.upstream_last_modified: str | None = None
        self.path: Path = storage.new_temp(key)
        self.size: int | None = None  # as declared by upstream, when it does
        self.written = 0
        self.disk_written = 0  # bytes [0, disk_written) are in the file at self.path
        self.spill = bytearray()  # bytes after disk_written, when the disk refused them
        self.sha256: str | None = None
        self.stored = False
        self.unsynced = False  # the disk took the bytes but would not fsync them
        self.error: HexproxyError | None = None
        self.finished = False
        self.waiting_for_lock = False  # another worker holds the fetch
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._progress = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"download {self.key}")

    async def _run(self) -> None:
        try:
            async with self._cross_process_lock():
                if not (self.adopt_stored and await self._adopt_stored_copy()):
                    await self._fetch_in_turn()
        except HexproxyError as exc:
            self._fail(exc)
        except Exception as exc:  # never leave clients hanging on an unexpected bug
            log.exception("download of %s crashed", self.key)
            self._fail(HexproxyError(f"internal error while fetching {self.key}: {exc}"))
        finally:
            # The partial file goes before anyone hears the download ended: a client told
            # "failed" must never find it still lying in tmp/ (readers keep their open fd).
            try:
                if not self.stored and self.path.parent == self.storage.tmp:
                    await asyncio.to_thread(self.storage.discard, self.path)
            finally:  # even when cancelled mid-discard, no reader may wait forever
                self.finished = True
                self._notify()
                if not self.started.done():
                    self.started.set_exception(self.error or HexproxyError("download ended early"))

    def _fail(self, error: HexproxyError) -> None:
        self.error = error
        if not self.started.done():
            self.started.set_exception(error)
            # Read it here so an unawaited failure is not reported as lost.
            self.started.exception()

    async def _adopt_stored_copy(self) -> bool:
        """Another worker may have stored it while we waited for the lock."""
        st, meta = await asyncio.to_thread(self._stat_stored)
        if st is None or meta is None or meta.size != st.st_size:
            return False
        self.path, self.size = self.storage.path(self.key), st.st_size
        self.written = self.disk_written = st.st_size
        self.sha256, self.stored = meta.sha256, True
        self.started.set_result(None)
        return True

    async def _fetch_in_turn(self) -> None:
        if self.recheck is not None:
            await self.recheck()
        try:
            await self._fetch()
        except HexproxyError as exc:
            if self.settle is not None:
                await self.settle(exc)
            raise

    def _stat_stored(self) -> tuple[os.stat_result | None, Meta | None]:
        return self.storage.stat(self.key), self.storage.read_meta(self.key)

    async def _fetch(self) -> None:
        digest = hashlib.sha256()
        extra = hashlib.new(self.expected_digest[0]) if self.expected_digest else None
        async with self.open_upstream() as resp:
            self.upstream_etag = resp.headers.get("ETag")
            self.upstream_last_modified = resp.headers.get("Last-Modified")
            declared = resp.content_length
            if declared is not None and declared > self.max_size:
                raise TooLarge(
                    f"{self.key}: upstream declared {declared} bytes, "
                    f"over the {self.max_size}-byte limit"
                )
            self.size = declared
            fh = await self._open_temp()
            try:
                self.started.set_result(None)
                async for chunk in resp.content.iter_chunked(CHUNK):
                    if self.written + len(chunk) > self.max_size:
                        raise TooLarge(
                            f"{self.key}: upstream body over the {self.max_size}-byte limit"
                        )
                    digest.update(chunk)
                    if extra is not None:
                        extra.update(chunk)
                    await self._append(fh, chunk)
                if fh is not None and not self.spill:
                    await self._sync(fh)
            finally:
                if fh is not None:
                    await fh.close()
        self.sha256 = digest.hexdigest()
        if self.expected is not None:
            self._check("sha256", digest.digest(), self.expected, "outer checksum")
        if extra is not None and self.expected_digest is not None:
            self._check(extra.name, extra.digest(), self.expected_digest[1], "checksum")
        await self._commit()

    async def _open_temp(self) -> Any:
        """The temp file, or None when the disk refuses it (then bytes stay in memory)."""
        try:
            await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
            return await aiofiles.open(self.path, "wb")
        except OSError as exc:
            log.warning("cannot cache %s (%s); serving without storing", self.key, exc.strerror)
            self.unsynced = True
            return None

    async def _append(self, fh: Any, chunk: bytes) -> None:
        if fh is None:
            self.spill.extend(chunk)
        elif not self.spill:
            try:
                await fh.write(chunk)
                # Readers pread the file: a chunk still in Python's write buffer would
                # be invisible to them (a trickling upstream sends chunks far smaller
                # than the buffer).
                await fh.flush()
                self.disk_written += len(chunk)
            except OSError as exc:
                log.warning(
                    "cannot write %s to the cache (%s); serving without storing",
                    self.key,
                    exc.strerror,
                )
                self.spill.extend(chunk)
        else:
            self.spill.extend(chunk)
        self.written += len(chunk)
        self._notify()

    async def _sync(self, fh: Any) -> None:
        try:
            await fh.flush()
            await asyncio.to_thread(os.fsync, fh.fileno())
        except OSError as exc:
            log.warning("cannot sync %s to the cache (%s); not storing it", self.key, exc.strerror)
            self.unsynced = True

    def _check(self, algorithm: str, digest: bytes, expected: bytes, what: str) -> None:
        if digest != expected:
            error = ChecksumMismatch(
                f"{self.key}: {algorithm} {digest.hex()} does not match the signed "
                f"{what} {expected.hex()}"
            )
            if self.on_verification_failure:
                self.on_verification_failure(self.key, error)
            raise error

    async def _commit(self) -> None:
        if self.spill or self.unsynced:
            return
        now = time.time()
        meta = Meta(
            self.sha256 or "",
            self.written,
            now,
            now,
            self.upstream_etag,
            self.upstream_last_modified,
        )
        try:
            await asyncio.to_thread(self.storage.commit, self.path, self.key, meta)
        except OSError as exc:
            log.warning("cannot store %s (%s); served without storing", self.key, exc.strerror)
            return
        self.path = self.storage.path(self.key)
        self.stored = True

    def _notify(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    @contextlib.asynccontextmanager
    async def _cross_process_lock(self) -> AsyncIterator[None]:
        """This worker's turn to fetch the object (see ``store.locks``)."""
        lock_file = self.storage.lock_path(self.key.path.replace("/", "_"))
        try:
            async with turn(lock_file, self.lock_timeout, self._waiting):
                self.waiting_for_lock = False
                yield
        except NoTurn:
            raise UpstreamTimeout(f"{self.key}: another worker is still fetching it") from None
        finally:
            self.waiting_for_lock = False

    def _waiting(self) -> None:
        self.waiting_for_lock = True

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The object's bytes for one client, as they arrive; raises the fetch's error
        instead of yielding the last byte if the object turns out bad."""
        await self.started
        # Reads go to a thread with pread (no shared file position).
        fd = await self._open_reader()
        pos = 0
        try:
            while True:
                ready = self.written if (self.finished and self.error is None) else self.written - 1
                if pos < ready:
                    data = await self._read(fd, pos, min(ready - pos, CHUNK))
                    if not data:
                        # Never spin on empty reads (nor send empty writes, which would
                        # not even notice a client that left).
                        raise HexproxyError(f"{self.key}: the cached bytes are not readable")
                    pos += len(data)
                    yield data
                elif self.finished:
                    if self.error is not None:
                        raise self.error
                    return
                else:
                    await self._progress.wait()
        finally:
            if fd is not None:
                os.close(fd)

    async def _open_reader(self) -> int | None:
        for _ in range(3):  # the temp file may be renamed into place in between
            try:
                return await open_fd(self.path)
            except FileNotFoundError:
                if self.finished and self.error is not None:
                    raise self.error from None
                if self.disk_written == 0 and self.unsynced:
                    return None  # the disk refused the file: everything is in memory
                await asyncio.sleep(0)
        raise HexproxyError(f"{self.key}: cached file vanished while serving")

    async def _read(self, fd: int | None, pos: int, size: int) -> bytes:
        if pos < self.disk_written and fd is not None:
            return await asyncio.to_thread(os.pread, fd, min(size, self.disk_written - pos), pos)
        start = pos - self.disk_written
        return bytes(self.spill[start : start + size])
