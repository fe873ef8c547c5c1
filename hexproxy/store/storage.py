"""The cache on disk: whole, verified objects or nothing.

Every write goes to a temporary file under ``tmp/`` (same filesystem), is
fsynced, then renamed over the final path, so a reader (or a crash) never sees
half an object. Each object has a small JSON sidecar (``<path>.meta``) with
its digest and upstream validators; a sidecar that does not describe the body
beside it (a crash between the two renames) is ignored, never trusted.

Beside the tree, ``index.sqlite3`` lists every object (``store.index``): each
store, revalidation and removal here updates it, so what the cache holds is
known without walking the tree.

The methods are synchronous and cheap; the async policy layer decides which
ones to push to a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from email.utils import parsedate_to_datetime
from pathlib import Path

from ..registry import parse_docs_filename, parse_tarball_filename
from .cachekey import CacheKey, Kind
from .index import INDEX_FILE, EntryIndex, Row
from .statefiles import STATE_DIR, StateDir

META_SUFFIX = ".meta"
TMP_DIR = "tmp"
LOCKS_DIR = "locks"


@dataclass(frozen=True, slots=True)
class Meta:
    sha256: str
    size: int
    stored_at: float
    validated_at: float
    upstream_etag: str | None = None
    upstream_last_modified: str | None = None

    def revalidated(self, now: float) -> Meta:
        return replace(self, validated_at=now)

    def supersedes(self, other: Meta) -> bool:
        """Is this copy of a registry file newer than ``other`` (a different body)?

        Upstream's own Last-Modified decides when both have one (one clock, upstream's);
        else when each was fetched, by the clocks of the replicas that fetched them."""
        if self.sha256 == other.sha256:
            return False
        mine, theirs = (
            _http_date(self.upstream_last_modified),
            _http_date(other.upstream_last_modified),
        )
        if mine is not None and theirs is not None and mine != theirs:
            return mine > theirs
        return self.stored_at > other.stored_at


class FileStorage:
    """The cache directory: a tree keyed by CacheKey. The server's local tier (what it
    sends with sendfile), and through ``fs_backend.FsStore`` the default Storage."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / TMP_DIR
        self.index = EntryIndex(root / INDEX_FILE)  # opened on first use
        # What the workers tell each other about upstream (statefiles.py).
        self.state = StateDir(root / STATE_DIR)

    def prepare(self) -> int:
        """Create the tree and drop temp files left by a crash (and what the last run's
        workers told each other about upstream); returns how many temp files."""
        self.state.clear()
        self.tmp.mkdir(parents=True, exist_ok=True)
        removed = 0
        for leftover in self.tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                removed += 1
        return removed

    def path(self, key: CacheKey) -> Path:
        return self.root / key.path

    def lock_path(self, name: str) -> Path:
        """The lock file worker processes share for ``name`` (see ``store.locks``)."""
        return self.root / LOCKS_DIR / f"{name}.lock"

    def _meta_path(self, key: CacheKey) -> Path:
        return self.root / (key.path + META_SUFFIX)

    def stat(self, key: CacheKey) -> os.stat_result | None:
        try:
            return os.stat(self.path(key))
        except FileNotFoundError:
            return None

    def read(self, key: CacheKey) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def read_meta(self, key: CacheKey) -> Meta | None:
        try:
            raw = json.loads(self._meta_path(key).read_bytes())
            return Meta(**raw)
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def write_meta(self, key: CacheKey, meta: Meta) -> None:
        """Write the sidecar (every store and revalidation ends here) and index the object."""
        self._install(json.dumps(asdict(meta)).encode(), self._meta_path(key))
        self.index.record(key, meta.size, meta.stored_at, meta.validated_at)

    def put(self, key: CacheKey, data: bytes, meta: Meta) -> None:
        """Store ``data`` atomically; the sidecar follows the body."""
        self._install(data, self.path(key))
        self.write_meta(key, meta)

    def new_temp(self, key: CacheKey) -> Path:
        """A fresh temp path (under ``tmp``, which the writer creates if it has to) for
        streaming ``key`` into; commit() or discard() it. No I/O."""
        return self.tmp / f"{uuid.uuid4().hex}.{Path(key.path).name}.part"

    def commit(self, temp: Path, key: CacheKey, meta: Meta) -> None:
        """Move a fully written and fsynced temp file into place."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)
        _fsync_dir(final.parent)
        self.write_meta(key, meta)

    @staticmethod
    def discard(temp: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()

    def delete(self, key: CacheKey) -> bool:
        """Remove an object and its sidecar; True if the object was there. Its index row
        goes either way: a row whose file is gone is drift to correct."""
        try:
            return self.unlink(key)
        finally:
            self.index.remove(key)

    def unlink(self, key: CacheKey) -> bool:
        """``delete`` but for the index row, for callers that drop many rows at once
        (eviction: one transaction, not one per file). True if the object was there."""
        with contextlib.suppress(FileNotFoundError):
            self._meta_path(key).unlink()
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def iter_keys(self) -> Iterator[CacheKey]:
        """Every stored object, by walking the tree (for inspection and pruning)."""
        for path in sorted(self.root.glob("registry/*")):
            if path.name in ("names", "versions"):
                yield CacheKey(Kind(path.name))
        for path in sorted(self.root.glob("registry/packages/*")):
            if not path.name.endswith(META_SUFFIX):
                yield CacheKey(Kind.PACKAGE, path.name)
        for path in sorted(self.root.glob("tarballs/*/*.tar")):
            yield CacheKey(Kind.TARBALL, *parse_tarball_filename(path.name))
        for path in sorted(self.root.glob("docs/*/*.tar.gz")):
            yield CacheKey(Kind.DOCS, *parse_docs_filename(path.name))
        installs = self.root / "installs"
        for path in sorted(installs.rglob("*")):
            if path.is_file() and not path.name.endswith(META_SUFFIX):
                yield CacheKey(Kind.INSTALL, path.relative_to(installs).as_posix())

    def entries(self) -> Iterator[tuple[CacheKey, os.stat_result, Meta | None]]:
        """Every stored object with its stat and its sidecar, if that describes it."""
        for key in self.iter_keys():
            st = self.stat(key)
            if st is None:
                continue  # removed meanwhile
            meta = self.read_meta(key)
            yield key, st, meta if meta is not None and meta.size == st.st_size else None

    def walk_rows(self) -> Iterator[Row]:
        """What the index should hold, read from the files: one full walk."""
        for key, st, meta in self.entries():
            yield Row(
                key,
                st.st_size,
                st.st_mtime,  # the last access the server recorded (see eviction)
                meta.stored_at if meta else None,
                meta.validated_at if meta else None,
            )

    def build_index(self) -> int:
        """Walk the tree and make the index agree with it; returns how many objects."""
        return self.index.build(self.walk_rows())

    def digest(self, key: CacheKey) -> str | None:
        """The sha256 of the stored body, read from disk; None if it is not there."""
        try:
            return sha256_file(self.path(key))
        except FileNotFoundError:
            return None

    def _install(self, data: bytes, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        temp = self.tmp / f"{uuid.uuid4().hex}.{final.name}.part"
        try:
            with temp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, final)
        except BaseException:
            self.discard(temp)
            raise
        _fsync_dir(final.parent)


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
