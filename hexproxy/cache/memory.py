"""Everything this process holds per cached object, under one budget.

Verified registry files (body and decoded form), the records of stored files this
process has served, and what the fast path derives from either (pre-encoded answers,
and the bodies of hot small tarballs, on each entry's Memo) all count against
``cache.memory_size``, divided between the workers. Past the budget, the entry used
longest ago goes first, one at a time; it is read back from disk (and verified again)
on its next use. Nothing is ever dropped wholesale, so a full table costs no more to
serve from than a half-full one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ..config import Config
from ..store.cachekey import CacheKey
from .entries import Entry, StoredFile
from .footprint import ENTRY_OVERHEAD, FILE_OVERHEAD, decoded_size

MEMORY_BUDGET = 64 * 1024 * 1024

Held = Entry[Any] | StoredFile


def budget_per_worker(config: Config) -> int:
    """``cache.memory_size`` is for the whole server: each worker holds its share."""
    return config.cache.memory_size // max(config.server.workers, 1)


class Memory:
    def __init__(self, budget: int = MEMORY_BUDGET) -> None:
        self.budget = budget
        # key -> (what is held, what it was counted at). Entry[Any]: each key's kind
        # decides its decoded type (cache.policy keeps to that).
        self._held: OrderedDict[CacheKey, tuple[Held, int]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._held)

    def get(self, key: CacheKey) -> Entry[Any] | None:
        """The entry held for a metadata ``key``, now the most recently used."""
        found = self._use(key)
        return found if isinstance(found, Entry) else None

    def file(self, key: CacheKey) -> StoredFile | None:
        """The record held for a stored file, now the most recently used."""
        found = self._use(key)
        return found if isinstance(found, StoredFile) else None

    def _use(self, key: CacheKey) -> Held | None:
        held = self._held.get(key)
        if held is None:
            return None
        self._held.move_to_end(key)
        return held[0]

    def put(self, item: Held) -> None:
        old = self._held.get(item.key)
        reused = None
        if old is not None and isinstance(item, Entry) and isinstance(old[0], Entry):
            # A revalidated entry keeps its decoded form: no need to estimate it again.
            reused = old[1] - old[0].memo.size if old[0].decoded is item.decoded else None
        self.pop(item.key)
        cost = (reused if reused is not None else _base_cost(item)) + item.memo.size
        self._held[item.key] = (item, cost)
        self.bytes += cost
        self._shrink()

    def recount(self, item: Held) -> None:
        """``item``'s memo changed size (the fast path kept or dropped a body on it)."""
        held = self._held.get(item.key)
        if held is None or held[0] is not item:
            return  # already replaced or dropped: nothing of it is counted
        cost = _base_cost(item) + item.memo.size
        self._held[item.key] = (item, cost)
        self.bytes += cost - held[1]
        self._shrink()

    def fits(self, size: int) -> bool:
        """Could something of ``size`` bytes be held without evicting everything else?
        (At most an eighth of the budget for one object.)"""
        return size <= self.budget // 8

    def pop(self, key: CacheKey) -> None:
        old = self._held.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
            _release(old[0])

    def _shrink(self) -> None:
        while self.bytes > self.budget and len(self._held) > 1:
            _, (item, cost) = self._held.popitem(last=False)
            self.bytes -= cost
            _release(item)


def _release(item: Held) -> None:
    """What was derived from a dropped item goes with it, even while something (the fast
    path's table of repeated requests) still refers to the item's memo: a memo whose value
    is None renders nothing, and the bytes it held are no longer counted anywhere."""
    item.memo.value = None
    item.memo.size = 0


def _base_cost(item: Held) -> int:
    if isinstance(item, StoredFile):
        return FILE_OVERHEAD
    return len(item.body) + ENTRY_OVERHEAD + decoded_size(item.decoded)
