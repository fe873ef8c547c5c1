"""The shared tier: an object store several replicas read and fill, behind each one's disk.

Each replica keeps its cache directory as a local tier (hot objects, sent with
sendfile). On a local miss it asks the shared store before upstream; what it
fetched from upstream and verified it publishes to the shared store in the
background, so the client never waits for the upload.

The store is trusted no more than upstream: everything read from it goes through
the same verification (the policy's gate, the signed checksums) before it is
stored locally or served, and a copy that fails is remembered as bad so the
upstream copy replaces it. A store that fails is left alone for a while (a
circuit breaker, as for upstream): lookups are skipped and publishes dropped,
and the replica carries on from its own disk and upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ObjectMissing, StoreUnavailable
from ..store.cachekey import CacheKey, Kind
from ..store.objects import Blob, Replace, Storage
from ..store.storage import Meta
from ..upstream.breaker import CircuitBreaker, State

log = logging.getLogger("hexproxy.shared")
T = TypeVar("T")

FAILURE_THRESHOLD = 3
RETRY_AFTER = 10.0
# At shutdown, uploads still running get this long to finish before they are dropped.
DRAIN_TIMEOUT = 10.0
# /_hexproxy/ready waits at most this long for the store: a readiness probe gives up after
# a second by default, and a slow store must not make a replica that serves look unready.
READY_TIMEOUT = 0.8


def is_shared(key: CacheKey) -> bool:
    """The public repository's registry files and immutable objects. Installer CSVs stay
    per replica: each is checked against its own .signed, and both come from the builds
    host together. An organization's files never go to the store: who may read them is
    decided per credential (``orgs``), and the store knows nothing of credentials."""
    if key.org:
        return False
    return not (key.kind is Kind.INSTALL and key.is_mutable)


class SharedTier:
    def __init__(self, store: Storage) -> None:
        self.store = store
        self.breaker = CircuitBreaker(FAILURE_THRESHOLD, RETRY_AFTER)
        self.requests: Counter[tuple[str, str]] = Counter()  # (operation, result)
        self.bad_objects = 0  # copies from the store that failed verification
        self._bad: set[CacheKey] = set()  # ...whose upstream copy must replace them
        self._uploads: set[asyncio.Task[None]] = set()

    @property
    def location(self) -> str:
        return self.store.location

    @property
    def state(self) -> str:
        return self.breaker.state.value

    async def start(self) -> None:
        await self.store.open()

    async def get(self, key: CacheKey) -> Blob | None:
        """The store's copy, or None: not there, or the store cannot be asked now."""
        if not is_shared(key):
            return None
        blob = await self._call("get", key, lambda: self.store.get(key))
        return blob

    def rejected(self, key: CacheKey, reason: str) -> None:
        """The store's copy of ``key`` failed verification: never serve it, replace it."""
        self.bad_objects += 1
        self._bad.add(key)
        log.error("shared store's copy of %s fails verification (%s); ignoring it", key, reason)

    def publish(self, key: CacheKey, body: bytes, meta: Meta) -> None:
        """Share a verified object, in the background: immutable objects only if the store
        has none (or a bad one), registry files only over an older copy."""
        if not is_shared(key):
            return
        self._spawn(key, lambda: self._put(key, body, meta))

    def publish_file(self, key: CacheKey, path: Path, meta: Meta) -> None:
        """Like publish, reading the body from a stored file (tarballs, docs, builds)."""
        if not is_shared(key):
            return

        async def upload() -> None:
            try:
                body = await asyncio.to_thread(path.read_bytes)
            except OSError as exc:  # evicted or removed meanwhile: nothing to share
                log.info("not sharing %s: %s", key, exc.strerror or exc)
                return
            await self._put(key, body, meta)

        self._spawn(key, upload)

    def _spawn(self, key: CacheKey, upload: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self.breaker.state is State.PAUSED:
            self.requests[("put", "skipped")] += 1
            return
        task = asyncio.create_task(upload(), name=f"share {key}")
        self._uploads.add(task)
        task.add_done_callback(self._uploads.discard)

    async def _put(self, key: CacheKey, body: bytes, meta: Meta) -> None:
        if key in self._bad:
            replace = Replace.ALWAYS
        elif key.is_mutable:
            replace = Replace.IF_NEWER
        else:
            replace = Replace.IF_ABSENT
        written = await self._call("put", key, lambda: self.store.put(key, body, meta, replace))
        if written is not None:
            self._bad.discard(key)

    async def _call(self, op: str, key: CacheKey, call: Callable[[], Awaitable[T]]) -> T | None:
        if not self.breaker.allow():
            self.requests[(op, "skipped")] += 1
            return None
        try:
            result = await call()
        except ObjectMissing:
            self.breaker.record_success()
            self.requests[(op, "missing")] += 1
            return None
        except StoreUnavailable as exc:
            self.breaker.record_failure(exc.message)
            self.requests[(op, "error")] += 1
            log.warning("shared store: %s (using the local disk and upstream)", exc.message)
            return None
        self.breaker.record_success()
        self.requests[(op, "ok")] += 1
        return result

    async def check(self) -> str | None:
        """None when the store answers, else why not (for /_hexproxy/ready); quick, and
        not asked at all while its circuit is open."""
        if self.breaker.state is State.PAUSED:
            wait = self.breaker.seconds_until_retry()
            return f"{self.breaker.last_error} (not asked again for {wait:.0f}s)"
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await self.store.check()
        except StoreUnavailable as exc:
            self.breaker.record_failure(exc.message)
            self.requests[("check", "error")] += 1
            return exc.message
        except TimeoutError:
            # Slow is not down: requests, with the store's own timeout, decide that.
            self.requests[("check", "slow")] += 1
            return f"{self.location}: no answer within {READY_TIMEOUT}s"
        self.breaker.record_success()
        self.requests[("check", "ok")] += 1
        return None

    async def drain(self) -> None:
        """Wait (at most DRAIN_TIMEOUT) for the uploads under way."""
        if self._uploads:
            await asyncio.wait(set(self._uploads), timeout=DRAIN_TIMEOUT)

    async def close(self) -> None:
        await self.drain()
        for task in list(self._uploads):
            task.cancel()
        await asyncio.gather(*self._uploads, return_exceptions=True)
        await self.store.close()


def shared_copy_problem(
    body: bytes, expected: bytes | None, digest: tuple[str, bytes] | None, max_size: int
) -> str | None:
    """Why an immutable object from the shared store must not be served, if it must not:
    the same checks an upstream download passes (size, signed checksum, build digest)."""
    if len(body) > max_size:
        return f"{len(body)} bytes, over the {max_size}-byte limit"
    if expected is not None and hashlib.sha256(body).digest() != expected:
        return "sha256 does not match the signed outer checksum"
    if digest is not None and hashlib.new(digest[0], body).digest() != digest[1]:
        return f"{digest[0]} does not match the signed installs CSV"
    return None
