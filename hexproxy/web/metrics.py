"""What the proxy did, counted cheaply and summed over every worker of the server.

Each worker counts into its own slot of memory shared by all workers (tally.py); a scrape
or the status page, whichever worker answers it, reads every slot. Requests and upstream
exchanges are added to the slot as they happen (one dict lookup and one add in memory).
Counters kept by the lower layers as plain numbers (verification failures, evictions, the
shared store's requests, hosted publishes, CPU time) are copied into the slot as
differences, by the worker itself: each second, and before it answers a scrape. So a
scrape sees its own worker exactly and the others as of their last second; a worker
killed with SIGKILL loses at most its last second of those, never what was summed before.

Gauges: whole-cache values (size, entries, max_size) are the answering worker's last
measurement of the directory they all share; each upstream host's and the shared store's
circuit state is the answering worker's; ``process_*`` memory and file descriptors are
summed over the live workers, ``process_cpu_seconds_total`` over every worker there was.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable

from prometheus_client import CollectorRegistry

from ..cache.policy import Cache
from ..errors import UpstreamError
from ..store.cachekey import CacheKey
from ..store.eviction import Evictor
from ..upstream.client import Host
from .tally import Board, Key, Tally, Totals

# Cache results (the X-Cache header) that mean "answered without going upstream first".
HIT_RESULTS = frozenset({"HIT", "STALE", "REVALIDATED"})
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SYNC_INTERVAL = 1.0  # seconds between copies of the lower layers' counters
Source = Callable[[], Iterable[tuple[Key, int]]]


class Traffic:
    """Client requests: ``add`` is called for each by the middleware and the fast path."""

    def __init__(self, tally: Tally) -> None:
        self.add = tally.add
        self.counter = tally.counter  # see Tally.counter
        self.values = tally.values
        self.started = time.time()


def hit_ratio(totals: Totals) -> float | None:
    """Share of cacheable answers served from the cache; None before any."""
    hits = misses = 0
    for (_, _, result), n in totals.family("requests"):
        if result in HIT_RESULTS:
            hits += n
        elif result == "MISS":
            misses += n
    return hits / (hits + misses) if hits + misses else None


def requests_total(totals: Totals) -> int:
    return sum(totals.requests.values())


class UpstreamMetrics:
    """The upstream client's Observer: counts straight into the shared slot."""

    def __init__(self, tally: Tally) -> None:
        self.add = tally.add

    def answered(self, key: CacheKey, status: int, seconds: float) -> None:
        kind = key.kind.value
        self.add(("upstream_requests", kind, status))
        self.add(("upstream_seconds", kind, bisect.bisect_left(LATENCY_BUCKETS, seconds)))
        self.add(("upstream_seconds_sum_us", kind), round(seconds * 1e6))

    def failed(self, error: UpstreamError) -> None:
        self.add(("upstream_failures", type(error).__name__))


class Metrics:
    """Everything a scrape reports. ``board`` is the server's (one slot per worker, this
    one's is ``slot``); without one, this process is the whole server."""

    def __init__(
        self, cache: Cache, evictor: Evictor, board: Board | None = None, slot: int = 0
    ) -> None:
        self.cache = cache
        self.evictor = evictor
        self.board = board or Board(1)
        self.tally = Tally(self.board, slot)
        self.registry = CollectorRegistry()
        self.traffic = Traffic(self.tally)
        self.upstream = UpstreamMetrics(self.tally)
        cache.upstream.observer = self.upstream
        self._sources: list[Source] = [self._cache_counters, _process_cpu]
        self._copied: dict[Key, int] = {}  # what each source said at the last sync

    def mirror(self, source: Source) -> None:
        """Copy a per-process counter into the shared slot: ``source()`` gives its
        running totals, each sync adds what they grew by."""
        self._sources.append(source)

    def sync(self) -> None:
        tally, copied = self.tally, self._copied
        for source in self._sources:
            for key, value in source():
                grew = value - copied.get(key, 0)
                copied[key] = value
                if grew > 0:
                    tally.add(key, grew)
        for key, value in _process_gauges():
            tally.set(key, value)

    def totals(self) -> Totals:
        """The whole server's counts, this worker's brought up to date first."""
        self.sync()
        return self.board.read()

    async def syncing(self, _app: object) -> AsyncIterator[None]:
        """cleanup_ctx: sync each SYNC_INTERVAL while the app runs, and once at the end."""

        async def loop() -> None:
            while True:
                self.sync()
                await asyncio.sleep(SYNC_INTERVAL)

        task = asyncio.create_task(loop(), name="hexproxy metrics sync")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.sync()

    def upstream_state(self, host: Host | None = None) -> str:
        """up / down / paused / offline for ``host`` (default: the repository)."""
        if self.cache.offline:
            return "offline"
        return (host or self.cache.upstream.repository).breaker.state.value

    def _cache_counters(self) -> Iterable[tuple[Key, int]]:
        counters, evictor = self.cache.counters, self.evictor
        yield ("verification_failures",), counters.verification_failures
        yield ("stale_served",), counters.stale_served
        yield ("evictions",), evictor.evicted
        yield ("evicted_bytes",), evictor.evicted_bytes
        shared = self.cache.shared
        if shared is not None:
            yield ("store_bad_objects",), shared.bad_objects
            for (op, result), n in list(shared.requests.items()):
                yield ("store_requests", op, result), n


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _process_cpu() -> Iterable[tuple[Key, int]]:
    """This process's user and system CPU time so far, in microseconds."""
    times = os.times()
    yield ("process_cpu_us",), round((times.user + times.system) * 1e6)


def _process_gauges() -> Iterable[tuple[Key, int]]:
    """Memory and descriptors, where /proc tells them (Linux)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        with open("/proc/self/statm", "rb") as statm:
            yield ("~process_resident_bytes",), int(statm.read().split()[1]) * _PAGE
        yield ("~process_open_fds",), len(os.listdir("/proc/self/fd"))
