"""The storage interface: whole objects with their metadata, by CacheKey, on any backend.

Two backends implement it: the filesystem (``fs_backend.FsStore``, the cache
directory) and any S3-compatible object store (``s3.S3Store``). The contract
every backend keeps, and ``tests/contract`` checks against each of them:

- ``get`` returns the whole body and the metadata it was stored with, or raises
  ``ObjectMissing``; a reader never sees part of an object, however a write ends.
- ``put`` replaces the object as one step; ``Replace`` says when it may.
- ``head``/``delete`` on a missing key raise ``ObjectMissing``; ``exists`` says False.
- ``list`` yields every stored object of the cache's layout, with its size and
  when it was last written.
- Anything else that goes wrong (unreachable, refused, timed out) is ``StoreUnavailable``.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from .cachekey import CacheKey
from .storage import Meta


class Replace(enum.Enum):
    """When ``put`` may replace an object that is already there."""

    ALWAYS = "always"
    # Tarballs, docs and builds never change: the first verified copy stays, so two
    # replicas racing to store one are harmless.
    IF_ABSENT = "if_absent"
    # Registry files: only a newer copy replaces the stored one (Meta.supersedes),
    # so a replica that fetched earlier cannot overwrite what another fetched later.
    IF_NEWER = "if_newer"


@dataclass(frozen=True, slots=True)
class Blob:
    """A whole stored object."""

    key: CacheKey
    body: bytes
    meta: Meta


@dataclass(frozen=True, slots=True)
class Listed:
    """One object as a listing shows it; ``meta`` when the backend has it at no extra cost."""

    key: CacheKey
    size: int
    modified: float  # when it was last written (or, on the filesystem, last served)
    meta: Meta | None = None


class Storage(Protocol):
    """What the cache needs from a place to keep objects."""

    @property
    def location(self) -> str:
        """Where the objects are, for people: a directory, or s3://bucket/prefix."""
        ...

    async def get(self, key: CacheKey) -> Blob: ...

    async def head(self, key: CacheKey) -> Meta: ...

    async def exists(self, key: CacheKey) -> bool: ...

    async def put(
        self, key: CacheKey, body: bytes, meta: Meta, replace: Replace = Replace.ALWAYS
    ) -> bool:
        """Store ``body``; False when ``replace`` kept the object already there."""
        ...

    async def delete(self, key: CacheKey) -> None: ...

    def list(self) -> AsyncIterator[Listed]: ...

    async def check(self) -> None:
        """Raise StoreUnavailable unless the store answers (for readiness)."""
        ...

    async def open(self) -> None:
        """Get ready to serve (no request is made): done at startup, not by the first user."""
        ...

    async def close(self) -> None: ...
