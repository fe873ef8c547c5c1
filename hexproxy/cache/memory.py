"""Verified metadata held in memory, so a hit costs no I/O.

A bound keeps a cache of the whole of hex.pm (tens of thousands of
``/packages`` files) from taking all of RAM: past it, the entries stored (or
revalidated) longest ago are dropped first; they are read back from disk, and
verified again, on their next use.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ..store.cachekey import CacheKey
from .entries import Entry

MEMORY_BUDGET = 64 * 1024 * 1024
# What an entry costs beyond its body: its metadata and the answer the fast path
# pre-encodes and keeps on it (entries.Memo; about 600 bytes of headers). Counted at a
# flat rate so that many tiny entries cannot exceed the budget either.
ENTRY_OVERHEAD = 1024


class Memory:
    def __init__(self, budget: int = MEMORY_BUDGET) -> None:
        self.budget = budget
        # Entry[Any]: each key's kind decides its decoded type (cache.policy keeps to that).
        self._entries: OrderedDict[CacheKey, Entry[Any]] = OrderedDict()
        self._bytes = 0

    def get(self, key: CacheKey) -> Entry[Any] | None:
        return self._entries.get(key)

    def put(self, entry: Entry[Any]) -> None:
        self.pop(entry.key)
        self._entries[entry.key] = entry
        self._bytes += len(entry.body) + ENTRY_OVERHEAD
        while self._bytes > self.budget and len(self._entries) > 1:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted.body) + ENTRY_OVERHEAD

    def pop(self, key: CacheKey) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old.body) + ENTRY_OVERHEAD
