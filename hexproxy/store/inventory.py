"""What a store holds, and the operator's changes to it (rm, prune).

The CLI runs this on any backend through the Storage interface (``scan_store``,
``remove_from``): the cache directory, or the bucket replicas share. On the cache
directory the answers come from its entry index (``store.index``) instead of a
walk: ``stats_of``, ``package_listings``, ``plan_prune`` and ``matching_in`` pick
the index when the store has one, and build it first (the one walk) when it is
missing. The server's evictor plans from the index too (``plan_indexed``) and
removes with the synchronous ``execute``. Both
are safe while proxies serve, because every change removes a whole object: the
server stats a stored file on every hit and fetches it again when it has vanished,
a file already being sent stays readable through its open descriptor, and a
replica that still holds an object removed from the bucket keeps serving its own
verified copy.

Last access: the server records when it served each immutable object by
setting that file's modification time (see ``eviction.AccessRecorder``).
Stored objects are never modified in place, so their mtime is free to carry
this; atime is not used because ``noatime``/``relatime`` mounts, backups and
``cache verify`` itself would make it meaningless.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..errors import ObjectMissing
from .cachekey import CacheKey, Kind, docs_key, package_key, tarball_key
from .fs_backend import FsStore
from .index import EntryIndex, IndexUnreadable, Row, Totals
from .objects import Listed, Storage
from .storage import FileStorage

# Objects that may be removed to make room: they are immutable and can always
# be fetched again. Registry files are never evicted: they are small, and in an
# outage they are what lets clients resolve against the cache.
EVICTABLE = (Kind.TARBALL, Kind.DOCS, Kind.INSTALL)


@dataclass(frozen=True, slots=True)
class Item:
    """One stored object as the operator sees it."""

    key: CacheKey
    size: int
    last_access: float  # the file's mtime: store time, then refreshed by the server
    stored_at: float | None  # from the sidecar; None when the sidecar is missing
    validated_at: float | None  # registry files: when upstream last confirmed it

    @property
    def evictable(self) -> bool:
        return self.key.kind in EVICTABLE and not self.key.is_mutable


def scan(storage: FileStorage) -> list[Item]:
    """Every stored object with its size and times; objects that vanish meanwhile are skipped."""
    return [
        _item(Listed(key, st.st_size, st.st_mtime, meta)) for key, st, meta in storage.entries()
    ]


async def scan_store(store: Storage, *, registry_meta: bool = True) -> list[Item]:
    """Like scan, on any backend. An object store's listing has no metadata, so with
    ``registry_meta`` registry files (few, and the only ones whose freshness matters)
    are asked for theirs; other objects were last written when they were stored."""
    items = []
    async for listed in store.list():
        if listed.meta is None and registry_meta and listed.key.is_registry:
            try:
                meta = await store.head(listed.key)
            except ObjectMissing:
                continue  # removed meanwhile
            listed = Listed(listed.key, listed.size, listed.modified, meta)
        items.append(_item(listed))
    return items


def _item_of(row: Row) -> Item:
    return Item(row.key, row.size, row.last_access, row.stored_at, row.validated_at)


# ----- the index, where the store has one -----


def indexed_totals(storage: FileStorage) -> Totals | None:
    """The cache directory's totals from its index (O(1)); None until it has been built."""
    index = storage.index
    try:
        return index.totals() if index.built() else None
    except IndexUnreadable:
        return None


def _ready_index(store: Storage) -> EntryIndex | None:
    """The store's index, built now if it has none (in a thread: the one walk); None for
    a store without one, or an index that cannot be read (then the caller walks)."""
    if not isinstance(store, FsStore):
        return None
    files = store.files
    try:
        if not files.index.built():
            files.build_index()
        return files.index if files.index.built() else None
    except IndexUnreadable:
        return None


async def ready_index(store: Storage) -> EntryIndex | None:
    return await asyncio.to_thread(_ready_index, store)


async def keys_on_disk(store: Storage) -> list[CacheKey] | None:
    """Every key in the cache directory by a walk of names only (what ``verify`` must
    read); None for other stores, whose own listing is the way to learn them."""
    if not isinstance(store, FsStore):
        return None
    return await asyncio.to_thread(lambda: list(store.files.iter_keys()))


def _item(listed: Listed) -> Item:
    meta = listed.meta
    return Item(
        listed.key,
        listed.size,
        listed.modified,
        meta.stored_at if meta else None,
        meta.validated_at if meta else None,
    )


# ----- ls -----


@dataclass(frozen=True, slots=True)
class PackageListing:
    """One package: its registry file (if cached) and its cached releases."""

    name: str
    registry: Item | None
    releases: tuple[Item, ...]

    @property
    def size(self) -> int:
        own = self.registry.size if self.registry else 0
        return own + sum(item.size for item in self.releases)


def list_packages(items: Iterable[Item], pattern: str | None = None) -> list[PackageListing]:
    """Packages whose name matches the shell-style ``pattern``, sorted by name."""
    registry: dict[str, Item] = {}
    releases: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        if item.key.kind is Kind.PACKAGE:
            registry[item.key.name] = item
        elif item.key.kind is Kind.TARBALL:
            releases[item.key.name].append(item)
    names = sorted(set(registry) | set(releases))
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return [
        PackageListing(n, registry.get(n), tuple(sorted(releases[n], key=_version_order)))
        for n in names
    ]


def _version_order(item: Item) -> tuple[tuple[int, ...], str]:
    # Numeric where it can be (1.10.0 after 1.9.0); the raw string breaks ties.
    core = item.key.version.split("-", 1)[0].split("+", 1)[0]
    parts = tuple(int(p) if p.isdigit() else 0 for p in core.split("."))
    return parts, item.key.version


def indexed_packages(index: EntryIndex, pattern: str | None = None) -> Iterator[PackageListing]:
    """``list_packages`` from the index, one package at a time: constant memory."""
    rows = index.packages()
    for name, group in itertools.groupby(rows, key=lambda r: r.key.name):
        if pattern and not fnmatch.fnmatchcase(name, pattern):
            continue
        registry, releases = None, []
        for row in group:
            if row.key.kind is Kind.PACKAGE:
                registry = _item_of(row)
            else:
                releases.append(_item_of(row))
        yield PackageListing(name, registry, tuple(sorted(releases, key=_version_order)))


async def package_listings(store: Storage, pattern: str | None = None) -> Iterator[PackageListing]:
    """What ``ls`` shows: streamed from the index where there is one, else from a scan."""
    index = await ready_index(store)
    if index is not None:
        return indexed_packages(index, pattern)
    return iter(list_packages(await scan_store(store), pattern))


# ----- stats -----


@dataclass(frozen=True, slots=True)
class KindStats:
    entries: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class Stats:
    entries: int
    bytes: int
    evictable_bytes: int
    by_kind: dict[str, KindStats]
    oldest: Item | None
    newest: Item | None


def stats(items: Iterable[Item]) -> Stats:
    """Totals and per-kind counts; oldest/newest by when each object was stored."""
    items = list(items)
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for item in items:
        counts[item.key.kind.value] += 1
        sizes[item.key.kind.value] += item.size
    by_age = sorted(items, key=_stored_time)
    return Stats(
        entries=len(items),
        bytes=sum(sizes.values()),
        evictable_bytes=sum(i.size for i in items if i.evictable),
        by_kind={k: KindStats(counts[k], sizes[k]) for k in sorted(counts)},
        oldest=by_age[0] if by_age else None,
        newest=by_age[-1] if by_age else None,
    )


def indexed_stats(index: EntryIndex) -> Stats:
    """``stats`` from the index: its running totals and two ordered lookups."""
    totals = index.totals()
    oldest, newest = index.oldest_and_newest()
    return Stats(
        entries=totals.entries,
        bytes=totals.bytes,
        evictable_bytes=totals.evictable_bytes,
        by_kind={k: KindStats(n, b) for k, (n, b) in sorted(totals.by_kind.items())},
        oldest=_item_of(oldest) if oldest else None,
        newest=_item_of(newest) if newest else None,
    )


async def stats_of(store: Storage) -> Stats:
    index = await ready_index(store)
    if index is not None:
        return await asyncio.to_thread(indexed_stats, index)
    return stats(await scan_store(store, registry_meta=False))


def _stored_time(item: Item) -> float:
    return item.stored_at if item.stored_at is not None else item.last_access


# ----- rm -----


def matching(items: Iterable[Item], name: str, version: str | None) -> list[Item]:
    """What ``rm NAME[@VERSION]`` removes: one release (tarball and docs), or the package
    with its registry file and every release. InvalidRequest for a bad name or version."""
    package = package_key(name)  # validates the name before it becomes a path
    if version is not None:
        wanted = {tarball_key(name, version), docs_key(name, version)}
        return [i for i in items if i.key in wanted]
    return [
        i
        for i in items
        if i.key == package or (i.key.kind in (Kind.TARBALL, Kind.DOCS) and i.key.name == name)
    ]


async def matching_in(store: Storage, name: str, version: str | None) -> list[Item]:
    """``matching`` over the store: the index's rows for ``name`` where there is one."""
    package_key(name)  # validate before anything is looked up
    index = await ready_index(store)
    if index is not None:
        rows = await asyncio.to_thread(index.by_name, name)
        return matching((_item_of(r) for r in rows), name, version)
    return matching(await scan_store(store, registry_meta=False), name, version)


async def remove_from(store: Storage, items: Iterable[Item]) -> list[Item]:
    """Delete these objects from any backend; returns those that were still there."""
    removed = []
    for item in items:
        try:
            await store.delete(item.key)
        except ObjectMissing:
            continue
        removed.append(item)
    return removed


def remove(storage: FileStorage, keys: Iterable[CacheKey]) -> list[Item]:
    """Delete these objects (and sidecars); returns what was actually there."""
    removed, gone = [], []
    try:
        for key in keys:
            st = storage.stat(key)
            if storage.unlink(key) and st is not None:
                removed.append(Item(key, st.st_size, st.st_mtime, None, None))
            gone.append(key)  # its row goes too, also when its file was already gone
    finally:
        storage.index.remove(*gone)
    return removed


# ----- prune and eviction -----


@dataclass(frozen=True, slots=True)
class Plan:
    """What pruning would remove, least recently used first, and what would be left."""

    remove: tuple[Item, ...]
    total_before: int
    kept_registry: int = 0  # registry bytes that count against the limit but are never removed
    notes: list[str] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(item.size for item in self.remove)

    @property
    def total_after(self) -> int:
        return self.total_before - self.freed


def lru(items: Iterable[Item]) -> list[Item]:
    """Evictable objects, least recently used first."""
    return sorted((i for i in items if i.evictable), key=lambda i: (i.last_access, i.key.path))


def plan_max_size(items: Iterable[Item], max_size: int) -> Plan:
    """Remove least recently used objects until the total is at most ``max_size``."""
    items = list(items)
    total = sum(i.size for i in items)
    chosen: list[Item] = []
    excess = total - max_size
    for item in lru(items):
        if excess <= 0:
            break
        chosen.append(item)
        excess -= item.size
    notes = []
    if excess > 0:
        notes.append("registry files alone exceed the limit; they are never removed")
    return Plan(tuple(chosen), total, sum(i.size for i in items if not i.evictable), notes)


def plan_older_than(items: Iterable[Item], cutoff: float) -> Plan:
    """Remove every evictable object not used since ``cutoff`` (a UNIX time)."""
    items = list(items)
    chosen = tuple(i for i in lru(items) if i.last_access < cutoff)
    return Plan(chosen, sum(i.size for i in items))


def plan_indexed(storage: FileStorage, max_size: int) -> Plan:
    """``plan_max_size`` from the index: reads only as many LRU rows as it removes."""
    index = storage.index
    totals = index.totals()
    chosen: list[Item] = []
    excess = totals.bytes - max_size
    if excess > 0:
        for row in index.least_recently_used():
            chosen.append(_item_of(row))
            excess -= row.size
            if excess <= 0:
                break
    notes = []
    if excess > 0:
        notes.append("registry files alone exceed the limit; they are never removed")
    return Plan(tuple(chosen), totals.bytes, totals.bytes - totals.evictable_bytes, notes)


def plan_indexed_older_than(storage: FileStorage, cutoff: float) -> Plan:
    index = storage.index
    chosen = tuple(_item_of(r) for r in index.least_recently_used(before=cutoff))
    return Plan(chosen, index.totals().bytes)


async def plan_prune(
    store: Storage, *, max_size: int | None = None, older_than: float | None = None
) -> Plan:
    """What ``prune`` removes: down to ``max_size``, or what was not used since the UNIX
    time ``older_than``. From the index where there is one, else from a scan."""
    index = await ready_index(store)
    if index is not None and isinstance(store, FsStore):
        if max_size is not None:
            return await asyncio.to_thread(plan_indexed, store.files, max_size)
        assert older_than is not None
        return await asyncio.to_thread(plan_indexed_older_than, store.files, older_than)
    items = await scan_store(store, registry_meta=False)
    if max_size is not None:
        return plan_max_size(items, max_size)
    assert older_than is not None
    return plan_older_than(items, older_than)


def execute(storage: FileStorage, plan: Plan) -> list[Item]:
    """Carry out a plan; an object used again since it was planned is still removed
    (LRU order is a heuristic, and the server refetches on the next request)."""
    return remove(storage, (item.key for item in plan.remove))


def total_size(items: Iterable[Item]) -> int:
    return sum(i.size for i in items)
