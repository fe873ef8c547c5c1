"""Keeping the cache under ``cache.max_size``: last-access bookkeeping and LRU eviction.

The hit path only puts the served path in a dict (no syscall); a background
task writes those times to disk in one batch per round (as the files' mtime,
see ``inventory``), then, if the cache is over its limit, removes the least
recently used tarballs until it is back under ``LOW_WATER`` of the limit (so
one new tarball does not trigger a new round at once).

Nothing is evicted while the repository is unreachable (its breaker not UP) or the
proxy is offline: then the cache may be all that clients have, and a file
removed now could not be fetched again. With several workers each runs this
loop; a lock file lets only one of them evict at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..units import format_size
from . import inventory
from .cachekey import CacheKey, key_for_request_path
from .locks import held_if_free
from .storage import FileStorage

log = logging.getLogger("hexproxy.eviction")

INTERVAL = 60.0  # seconds between rounds when nothing pushes for one sooner
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


def write_access_times(root: Path, accessed: dict[str, float]) -> int:
    """Set each served file's mtime to its last access (never backwards: another worker
    may have recorded a later one). Returns how many files were updated."""
    updated = 0
    for path, when in accessed.items():
        key = key_for_request_path(path)
        if key is None or key.is_mutable:
            continue
        with contextlib.suppress(FileNotFoundError):
            target = root / key.path
            st = os.stat(target)
            if st.st_mtime < when:
                os.utime(target, (st.st_atime, when))
                updated += 1
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
        self._added = 0  # bytes stored since the last measurement (an estimate)
        self._wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._round: asyncio.Future[list[inventory.Item]] | None = None

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
            await asyncio.to_thread(write_access_times, self.storage.root, accessed)
        except OSError as exc:  # a read-only or vanished cache dir: LRU order is only a hint
            log.warning("cannot record access times (%s)", exc.strerror or exc)

    def may_evict(self) -> bool:
        """Only while upstream can give back what we remove (``Cache.can_refetch``)."""
        return self.can_refetch()

    async def run_once(self) -> list[inventory.Item]:
        """One round; returns what was evicted."""
        await self.flush()
        items = await asyncio.to_thread(inventory.scan, self.storage)
        self.usage = Usage(inventory.total_size(items), len(items), time.time())
        self._added = 0
        if not self.max_size or self.usage.bytes <= self.max_size or not self.may_evict():
            return []
        return await asyncio.to_thread(self._evict, items)

    def _evict(self, items: list[inventory.Item]) -> list[inventory.Item]:
        with held_if_free(self.storage.lock_path("evict")) as mine:
            if not mine:
                return []  # another worker is evicting right now
            plan = inventory.plan_max_size(items, int(self.max_size * LOW_WATER))
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
