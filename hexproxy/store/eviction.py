"""Keeping the cache under ``cache.max_size``: last-access bookkeeping and LRU eviction.

The hit path only puts the served path in a dict (no syscall); a background
task writes those times in one batch per round, into the entry index and as
the files' mtime (so an index rebuilt from the files keeps the order, see
``inventory``). Then, if the cache is over its limit, it removes the least
recently used tarballs until it is back under ``LOW_WATER`` of the limit (so
one new tarball does not trigger a new round at once).

A round costs O(what changed): the size comes from the index's running totals
and the victims from its LRU order, never from a walk of the cache. The one
walk is the index's build, once, in the background, when a cache has no index
(or an unfinished one).

Nothing is evicted while the repository is unreachable (its breaker not UP) or the
proxy is offline: then the cache may be all that clients have, and a file
removed now could not be fetched again. With several workers, every worker
records its own hits, but only one is the evictor: the one holding the flock on
``locks/evictor.lock``, taken for the life of the process (the others try again
each round, so another takes over when it exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import HexproxyError
from ..units import format_size
from . import inventory
from .cachekey import CacheKey, key_for_request_path
from .index import IndexUnreadable
from .locks import open_lock, try_lock
from .storage import FileStorage

log = logging.getLogger("hexproxy.eviction")

INTERVAL = 15.0  # seconds between rounds (each O(changed)) when nothing pushes for one sooner
MIN_GAP = 1.0  # at most one round per this many seconds, however many misses arrive
LOW_WATER = 0.9  # evict down to this fraction of max_size


class AccessRecorder:
    """When each immutable object was last served, flushed to disk in batches."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.pending: dict[str, float] = {}  # request path -> last time served
        self.clock = clock

    def accessed(self, path: str) -> None:
        """``path`` was served just now. The whole per-hit cost: one dict store."""
        self.pending[path] = self.clock()

    def take(self) -> dict[str, float]:
        taken, self.pending = self.pending, {}
        return taken


def write_access_times(storage: FileStorage, accessed: dict[str, float]) -> int:
    """Record each served object's last access in the index and as its file's mtime
    (never backwards: another worker may have recorded a later one). Returns how many
    files were updated."""
    updated, keys = 0, {}
    for path, when in accessed.items():
        try:
            key = key_for_request_path(path)
        except HexproxyError:  # only served paths are recorded, but never trust one
            continue
        if key is None or key.is_mutable:
            continue
        keys[key] = when
        with contextlib.suppress(FileNotFoundError):
            target = storage.path(key)
            st = os.stat(target)
            if st.st_mtime < when:
                os.utime(target, (st.st_atime, when))
                updated += 1
    storage.index.touch(keys)
    return updated


@dataclass(frozen=True, slots=True)
class Usage:
    """The last measured size of the cache, for metrics and the status page."""

    bytes: int
    entries: int
    measured_at: float


class Evictor:
    """The background round: flush access times, measure, evict if over the limit.

    ``can_refetch`` says whether what is removed now could be fetched again (the
    policy layer knows: not offline, upstream answering); ``forget`` drops what
    the process still holds for a removed key.
    """

    def __init__(
        self,
        storage: FileStorage,
        max_size: int,
        *,
        can_refetch: Callable[[], bool],
        forget: Callable[[CacheKey], None],
        interval: float = INTERVAL,
    ) -> None:
        self.storage = storage
        self.max_size = max_size
        self.can_refetch = can_refetch
        self.forget = forget
        self.interval = interval
        self.access = AccessRecorder()
        self.usage: Usage | None = None
        self.evicted = 0
        self.evicted_bytes = 0
        self.index_builds = 0  # index builds (each a walk of the cache) this process began
        self._added = 0  # bytes stored since the last measurement (an estimate)
        self._lock_fd: int | None = None  # the evictor lock, while this process holds it
        self._wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._round: asyncio.Future[list[inventory.Item]] | None = None

    @property
    def is_evictor(self) -> bool:
        """Is this the one process (of those sharing the cache) that evicts?"""
        return self._lock_fd is not None

    def stored(self, size: int) -> None:
        """A miss stored about ``size`` bytes: run a round soon if that may pass the limit."""
        self._added += size
        if self.max_size and self.usage and self.usage.bytes + self._added > self.max_size:
            self._wake.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name="hexproxy eviction")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        round_, self._round = self._round, None
        if round_ is not None and not round_.done():
            # Cancelling the loop cannot stop a removal thread that has started: let the
            # round finish, so that nothing is deleted after stop() has returned.
            await asyncio.wait([round_])
            if not round_.cancelled() and round_.exception() is not None:
                log.error("eviction round failed", exc_info=round_.exception())
        await self.flush()  # the last access times are not lost at shutdown
        self._resign()

    async def _loop(self) -> None:
        while True:
            self._round = asyncio.ensure_future(self.run_once())
            try:
                await asyncio.shield(self._round)  # stop() cancels the loop, not the round
            except Exception:  # a bad round must not end eviction for the process
                log.exception("eviction round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await asyncio.sleep(MIN_GAP)

    async def flush(self) -> None:
        accessed = self.access.take()
        if not accessed:
            return
        try:
            await asyncio.to_thread(write_access_times, self.storage, accessed)
        except OSError as exc:  # a read-only or vanished cache dir: LRU order is only a hint
            log.warning("cannot record access times (%s)", exc.strerror or exc)

    def may_evict(self) -> bool:
        """Only while upstream can give back what we remove (``Cache.can_refetch``)."""
        return self.can_refetch()

    async def run_once(self) -> list[inventory.Item]:
        """One round; returns what was evicted. O(changed): no walk of the cache, but
        for the index's one build when it has none."""
        await self.flush()
        if await asyncio.to_thread(self._claim):
            await self._ensure_index()
        await self._measure()
        if not self.is_evictor or self.usage is None:
            return []
        if not self.max_size or self.usage.bytes <= self.max_size or not self.may_evict():
            return []
        return await asyncio.to_thread(self._evict)

    def _claim(self) -> bool:
        """Become the evictor if no other process is (one flock attempt, no waiting)."""
        if self._lock_fd is None:
            try:
                fd = open_lock(self.storage.lock_path("evictor"))
            except OSError:
                return False  # a read-only cache: nothing to evict anyway
            if try_lock(fd):
                self._lock_fd = fd
            else:
                os.close(fd)
        return self._lock_fd is not None

    def _resign(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock: another worker takes over next round

    async def _ensure_index(self) -> None:
        index = self.storage.index
        if await asyncio.to_thread(index.built):
            return
        log.info("building the entry index of %s (once)", self.storage.root)
        self.index_builds += 1
        try:
            count = await asyncio.to_thread(self.storage.build_index)
        except IndexUnreadable as exc:  # a read-only or full disk: serve on, try next round
            if self.index_builds == 1:
                log.warning("%s; nothing is evicted without it", exc)
            return
        log.info("entry index built: %d objects", count)

    async def _measure(self) -> None:
        """The cache's size from the index's running totals (O(1)); not while no index
        has been built, since a partial count would mislead."""
        totals = await asyncio.to_thread(inventory.indexed_totals, self.storage)
        if totals is not None:
            self.usage = Usage(totals.bytes, totals.entries, time.time())
            self._added = 0

    def _evict(self) -> list[inventory.Item]:
        plan = inventory.plan_indexed(self.storage, int(self.max_size * LOW_WATER))
        removed = inventory.execute(self.storage, plan)
        for item in removed:
            self.forget(item.key)
        freed = sum(i.size for i in removed)
        self.evicted += len(removed)
        self.evicted_bytes += freed
        if self.usage is not None:
            self.usage = Usage(
                self.usage.bytes - freed, self.usage.entries - len(removed), time.time()
            )
        log.info(
            "evicted %d least recently used files (%s) to stay under max_size %s%s",
            len(removed),
            format_size(freed),
            format_size(self.max_size),
            "; " + "; ".join(plan.notes) if plan.notes else "",
        )
        return removed
