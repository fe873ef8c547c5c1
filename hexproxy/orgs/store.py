"""An organization's files as the proxy holds them: verified, on disk, registry files also
in memory. No authorization happens here; ``policy`` decides who may have them.

Registry files go through the public cache's own gate (``cache.gate``), with
``repository`` = the organization: hexpm's key, since hex.pm signs every organization
with its one key.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

from ..cache.entries import Counters, Entry, Status, StoredFile
from ..cache.gate import Gate
from ..config import Config
from ..errors import UpstreamStatus, VerificationError
from ..store.cachekey import CacheKey
from ..store.storage import FileStorage, Meta, sha256_file
from .asking import Reply

log = logging.getLogger("hexproxy.orgs")

MEMORY_BUDGET = 16 * 1024 * 1024  # verified registry files kept in memory


class OrgStore:
    def __init__(
        self,
        config: Config,
        storage: FileStorage,
        gate: Gate,
        counters: Counters,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.storage = storage
        self.gate = gate
        self.counters = counters
        self.clock = clock
        self._memory: OrderedDict[CacheKey, Entry[object]] = OrderedDict()
        self._memory_bytes = 0

    # ----- registry files -----

    def fresh(self, entry: Entry[object]) -> bool:
        return self.clock() - entry.meta.validated_at < self.config.cache.registry_ttl

    async def entry(self, key: CacheKey) -> Entry[object] | None:
        """The verified registry file held for ``key``, from memory or disk."""
        entry = self._memory.get(key)
        if entry is not None:
            self._memory.move_to_end(key)
            return entry
        body = await asyncio.to_thread(self.storage.read, key)
        if body is None:
            return None
        try:
            decoded = await asyncio.to_thread(self.verify_bytes, key, body)
        except VerificationError as exc:
            self.counters.failure(f"stored {key}: {exc.message}")
            log.error("stored copy of %s fails verification (%s); ignoring it", key, exc.message)
            return None
        digest = hashlib.sha256(body).hexdigest()
        meta = await asyncio.to_thread(self.storage.read_meta, key)
        if meta is None or meta.sha256 != digest:
            meta = Meta(digest, len(body), self.clock(), 0.0)  # revalidate at the next request
        entry = Entry(key, body, meta, decoded)
        self._remember(entry)
        return entry

    async def answered(
        self, key: CacheKey, held: Entry[object] | None, answer: Reply
    ) -> tuple[Entry[object], Status]:
        """What upstream's 200 or 304 makes of ``held``: the same file confirmed, or a new
        one, verified before it is stored."""
        now = self.clock()
        if answer.status == 304:
            if held is None:
                raise UpstreamStatus(f"upstream answered 304 to a plain GET of {key}", 304)
            return await self._touch(held, now, answer), Status.REVALIDATED
        decoded = await self._verify(key, answer.body)
        if held is not None and held.body == answer.body:
            return await self._touch(held, now, answer), Status.REVALIDATED
        meta = Meta(
            hashlib.sha256(answer.body).hexdigest(),
            len(answer.body),
            now,
            now,
            answer.etag,
            answer.last_modified,
        )
        entry = Entry(key, answer.body, meta, decoded)
        try:
            await asyncio.to_thread(self.storage.put, key, answer.body, meta)
        except OSError as exc:
            log.warning("cannot store %s (%s); serving it from memory", key, exc.strerror)
        self._remember(entry)
        return entry, Status.MISS

    async def _touch(self, entry: Entry[object], now: float, answer: Reply) -> Entry[object]:
        meta = entry.meta.revalidated(now)
        if answer.etag or answer.last_modified:
            meta = replace(
                meta, upstream_etag=answer.etag, upstream_last_modified=answer.last_modified
            )
        touched = replace(entry, meta=meta)
        try:
            await asyncio.to_thread(self.storage.write_meta, entry.key, meta)
        except OSError as exc:
            log.warning("cannot record revalidation of %s (%s)", entry.key, exc.strerror)
        self._remember(touched)
        return touched

    async def _verify(self, key: CacheKey, body: bytes) -> object:
        try:
            return await asyncio.to_thread(self.verify_bytes, key, body)
        except VerificationError as exc:
            self.counters.failure(f"{key}: {exc.message}")
            log.error("verification failed for %s: %s", key, exc.message)
            raise

    def verify_bytes(self, key: CacheKey, body: bytes) -> object:
        """VerificationError unless ``body`` is ``key`` as hexpm signed it for this organization."""
        return replace(self.gate, repository=key.org).registry_file(key, body)

    def _remember(self, entry: Entry[object]) -> None:
        old = self._memory.pop(entry.key, None)
        if old is not None:
            self._memory_bytes -= len(old.body)
        self._memory[entry.key] = entry
        self._memory_bytes += len(entry.body)
        while self._memory_bytes > MEMORY_BUDGET and len(self._memory) > 1:
            _, evicted = self._memory.popitem(last=False)
            self._memory_bytes -= len(evicted.body)

    def forget(self, key: CacheKey) -> None:
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_bytes -= len(old.body)

    # ----- tarballs and docs -----

    async def stored_file(self, key: CacheKey) -> StoredFile | None:
        """The stored copy of an immutable object (written only by a verified Download)."""
        path = self.storage.path(key)
        try:
            st = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError:
            return None
        meta = await asyncio.to_thread(self.storage.read_meta, key)
        if meta is None or meta.size != st.st_size:
            digest = await asyncio.to_thread(sha256_file, path)
            meta = Meta(digest, st.st_size, st.st_mtime, st.st_mtime)
            await asyncio.to_thread(self.storage.write_meta, key, meta)
        return StoredFile(key, path, st.st_size, meta.sha256, meta.stored_at)

    async def upstream_etag(self, key: CacheKey) -> str | None:
        meta = await asyncio.to_thread(self.storage.read_meta, key)
        return meta.upstream_etag if meta else None
