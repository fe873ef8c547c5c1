"""The entry index: one row per stored object, so nothing has to walk the cache to know it.

``FileStorage`` keeps it up to date as objects are stored, revalidated and
removed, and the evictor records access times into it in batches; sizes,
per-kind totals and the least-recently-used order are then queries that cost
O(1) or O(what they return), however many objects the cache holds.

Why SQLite (the standard library's ``sqlite3``): the index is shared by every
worker process of one cache directory, and SQLite gives several processes one
consistent file with atomic transactions and proper locking, with nothing to
install or run. In WAL mode readers never wait for the writer and a commit does
not fsync (``synchronous=NORMAL``: a power cut may lose the last commits, which
is drift the index tolerates, never corruption). Per-kind totals are kept by
triggers, so they are never summed over all rows.

The index is a derived copy: the files are the truth. It may drift (a write that
failed here, files removed by hand, an older hexproxy writing without it), and
the readers tolerate that: eviction drops a row whose file is gone, a store
rewrites its row. It is built from a walk of the cache when it is missing or a
build never finished; deleting ``index.sqlite3`` makes the server build it anew.
Objects of hex.pm organizations are not listed, as the walk does not list them.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cachekey import CacheKey, Kind

log = logging.getLogger("hexproxy.index")

INDEX_FILE = "index.sqlite3"
SCHEMA = "1"
EVICTABLE = (Kind.TARBALL, Kind.DOCS, Kind.INSTALL)
BATCH = 1000  # rows per transaction while building, so writers from other workers get turns

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS entries (
    path TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    size INTEGER NOT NULL,
    last_access REAL NOT NULL,
    stored_at REAL,
    validated_at REAL,
    evictable INTEGER NOT NULL,
    recorded_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_lru ON entries (evictable, last_access, path);
CREATE INDEX IF NOT EXISTS entries_name ON entries (name, path);
CREATE INDEX IF NOT EXISTS entries_age ON entries (coalesce(stored_at, last_access), path);
CREATE TABLE IF NOT EXISTS totals (
    kind TEXT PRIMARY KEY,
    entries INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    evictable_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS entries_added AFTER INSERT ON entries BEGIN
    UPDATE totals SET entries = entries + 1, bytes = bytes + NEW.size,
        evictable_bytes = evictable_bytes + NEW.size * NEW.evictable
    WHERE kind = NEW.kind;
END;
CREATE TRIGGER IF NOT EXISTS entries_removed AFTER DELETE ON entries BEGIN
    UPDATE totals SET entries = entries - 1, bytes = bytes - OLD.size,
        evictable_bytes = evictable_bytes - OLD.size * OLD.evictable
    WHERE kind = OLD.kind;
END;
CREATE TRIGGER IF NOT EXISTS entries_resized AFTER UPDATE OF size ON entries BEGIN
    UPDATE totals SET bytes = bytes - OLD.size + NEW.size,
        evictable_bytes = evictable_bytes + (NEW.size - OLD.size) * NEW.evictable
    WHERE kind = NEW.kind;
END;
"""

# Newer facts win: a concurrent build must not set back an access or a revalidation.
_UPSERT = """
INSERT INTO entries (path, kind, name, version, size, last_access, stored_at, validated_at,
                     evictable, recorded_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (path) DO UPDATE SET
    size = excluded.size,
    last_access = max(last_access, excluded.last_access),
    stored_at = coalesce(excluded.stored_at, stored_at),
    validated_at = max(coalesce(validated_at, 0), coalesce(excluded.validated_at, 0)),
    recorded_at = excluded.recorded_at
"""

_COLUMNS = "kind, name, version, size, last_access, stored_at, validated_at"


class IndexUnreadable(Exception):
    """The index cannot be read now (a read-only cache without one, a broken file):
    callers fall back to walking the files."""


@dataclass(frozen=True, slots=True)
class Row:
    """One indexed object."""

    key: CacheKey
    size: int
    last_access: float
    stored_at: float | None
    validated_at: float | None


@dataclass(frozen=True, slots=True)
class Totals:
    entries: int
    bytes: int
    evictable_bytes: int
    by_kind: dict[str, tuple[int, int]]  # kind -> (entries, bytes), kinds with entries only


def indexable(key: CacheKey) -> bool:
    return not key.org


def evictable(key: CacheKey) -> bool:
    return key.kind in EVICTABLE and not key.is_mutable


class EntryIndex:
    """The index file of one cache directory. Every method is synchronous and short
    (call it from a thread); an error here is logged and never fails the caller's
    store or removal, since the files are what counts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection, used from the to_thread pool
        self._warned = False

    # ----- connection -----

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            try:
                _prepare(db)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _write(self, what: str, sql: str, rows: Iterable[tuple[object, ...]]) -> bool:
        try:
            with self._lock:
                db = self._connect()
                with _transaction(db):
                    db.executemany(sql, rows)
            return True
        except (sqlite3.Error, OSError) as exc:
            self._warn(what, exc)
            return False

    def _warn(self, what: str, exc: Exception) -> None:
        if not self._warned:  # once per process: a read-only cache would say it on every store
            self._warned = True
            log.warning("cannot %s in the entry index %s (%s)", what, self.path, exc)

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        try:
            with self._lock:
                return self._connect().execute(sql, args).fetchall()
        except (sqlite3.Error, OSError) as exc:
            raise IndexUnreadable(f"{self.path}: {exc}") from exc

    # ----- keeping it up to date -----

    def record(
        self,
        key: CacheKey,
        size: int,
        stored_at: float | None,
        validated_at: float | None,
        last_access: float | None = None,
    ) -> None:
        """``key`` is stored (or was revalidated) with this size and these times."""
        if indexable(key):
            self._write(
                "record an object",
                _UPSERT,
                [_values(key, size, stored_at, validated_at, last_access)],
            )

    def remove(self, *keys: CacheKey) -> None:
        """Drop these rows, in one transaction however many."""
        rows = [(key.path,) for key in keys if indexable(key)]
        if rows:
            self._write("drop objects", "DELETE FROM entries WHERE path = ?", rows)

    def touch(self, accessed: dict[CacheKey, float]) -> None:
        """Record when each of these was last served; O(len(accessed)), one transaction."""
        rows = [(when, key.path) for key, when in accessed.items() if indexable(key)]
        if rows:
            self._write(
                "record access times",
                "UPDATE entries SET last_access = ?1 WHERE path = ?2 AND last_access < ?1",
                rows,
            )

    # ----- building it -----

    def built(self) -> bool:
        """Has a build from the files finished (for this schema)? False when it cannot be read."""
        try:
            found = self._query(
                "SELECT count(*) FROM state WHERE (name = 'schema' AND value = ?) "
                "OR name = 'built_at'",
                (SCHEMA,),
            )
        except IndexUnreadable as exc:
            self._warn("read", exc)
            return False
        return bool(found[0][0] == 2)

    def build(self, rows: Iterable[Row]) -> int:
        try:
            return self._build(rows)
        except (sqlite3.Error, OSError) as exc:
            raise IndexUnreadable(f"cannot build {self.path}: {exc}") from exc

    def _build(self, rows: Iterable[Row]) -> int:
        """Make the index say what ``rows`` (a walk of the files) say: add or update each,
        then drop the rows no one recorded since the walk began (files that are gone).
        Stores by other processes meanwhile are kept. Returns how many rows were walked."""
        started, walked, batch = time.time(), 0, []
        for row in rows:
            if not indexable(row.key):
                continue
            batch.append(
                _values(
                    row.key, row.size, row.stored_at, row.validated_at, row.last_access, started
                )
            )
            walked += 1
            if len(batch) >= BATCH:
                self._write_batch(batch)
                batch = []
        self._write_batch(batch)
        with self._lock:
            db = self._connect()
            with _transaction(db):
                db.execute("DELETE FROM entries WHERE recorded_at < ?", (started,))
                db.execute(
                    "INSERT OR REPLACE INTO state VALUES ('built_at', ?)", (str(time.time()),)
                )
        return walked

    def _write_batch(self, batch: list[tuple[object, ...]]) -> None:
        with self._lock:
            db = self._connect()
            with _transaction(db):
                db.executemany(_UPSERT, batch)

    # ----- reading it -----

    def totals(self) -> Totals:
        found = self._query(
            "SELECT kind, entries, bytes, evictable_bytes FROM totals ORDER BY kind"
        )
        by_kind = {str(k): (int(n), int(b)) for k, n, b, _ in found if int(n)}
        return Totals(
            sum(n for n, _ in by_kind.values()),
            sum(b for _, b in by_kind.values()),
            sum(int(e) for *_, e in found),
            by_kind,
        )

    def oldest_and_newest(self) -> tuple[Row | None, Row | None]:
        """By when each was stored (or last used, where that is unknown)."""
        age = "coalesce(stored_at, last_access)"
        first = self._query(f"SELECT {_COLUMNS} FROM entries ORDER BY {age}, path LIMIT 1")
        last = self._query(f"SELECT {_COLUMNS} FROM entries ORDER BY {age} DESC, path LIMIT 1")
        return (_row(first[0]) if first else None, _row(last[0]) if last else None)

    def least_recently_used(self, before: float | None = None) -> Iterator[Row]:
        """Evictable objects, least recently used first (used before ``before``, if given);
        read in pages, so a caller that stops early has read only what it used."""
        seen: tuple[float, str] = (float("-inf"), "")
        limit = before if before is not None else float("inf")
        while True:
            page = self._query(
                f"SELECT {_COLUMNS}, path FROM entries WHERE evictable = 1 "
                "AND (last_access, path) > (?, ?) AND last_access < ? "
                "ORDER BY last_access, path LIMIT ?",
                (*seen, limit, BATCH),
            )
            for found in page:
                yield _row(found)
            if len(page) < BATCH:
                return
            seen = (float(page[-1][4]), str(page[-1][7]))

    def by_name(self, name: str) -> list[Row]:
        return [
            _row(r) for r in self._query(f"SELECT {_COLUMNS} FROM entries WHERE name = ?", (name,))
        ]

    def packages(self) -> Iterator[Row]:
        """Registry files of packages and tarballs, by package name; paged, so constant memory."""
        seen = ("", "")
        while True:
            page = self._query(
                f"SELECT {_COLUMNS}, path FROM entries WHERE kind IN ('package', 'tarball') "
                "AND (name, path) > (?, ?) ORDER BY name, path LIMIT ?",
                (*seen, BATCH),
            )
            for found in page:
                yield _row(found)
            if len(page) < BATCH:
                return
            seen = (str(page[-1][1]), str(page[-1][7]))


def _prepare(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    # Every statement is idempotent, so workers opening a new index at once agree
    # (executescript commits on its own: it cannot join the transaction below).
    db.executescript(_SCHEMA_SQL)
    with _transaction(db):
        db.executemany("INSERT OR IGNORE INTO totals (kind) VALUES (?)", [(k.value,) for k in Kind])
        db.execute("INSERT OR IGNORE INTO state VALUES ('schema', ?)", (SCHEMA,))


def _values(
    key: CacheKey,
    size: int,
    stored_at: float | None,
    validated_at: float | None,
    last_access: float | None,
    recorded_at: float | None = None,
) -> tuple[object, ...]:
    now = time.time()
    return (
        key.path,
        key.kind.value,
        key.name,
        key.version,
        size,
        last_access if last_access is not None else now,
        stored_at,
        validated_at,
        int(evictable(key)),
        recorded_at if recorded_at is not None else now,
    )


def _row(found: Any) -> Row:
    kind, name, version, size, last_access, stored_at, validated_at = found[:7]
    return Row(
        CacheKey(Kind(kind), str(name), str(version)),
        int(size),
        float(last_access),
        None if stored_at is None else float(stored_at),
        None if not validated_at else float(validated_at),
    )


class _transaction:
    """BEGIN IMMEDIATE .. COMMIT (ROLLBACK on error): take the write lock up front, so two
    workers never deadlock upgrading read locks; the busy timeout makes the other wait."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
