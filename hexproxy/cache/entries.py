"""What the cache hands out: values the policy layer returns and the HTTP layer renders.

Kept apart from ``policy.py`` so the renderers (web/responses.py, web/fastpath.py) and the
policy share these types without the renderers depending on the policy's machinery.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Generic, TypeVar

from ..store.cachekey import CacheKey
from ..store.storage import Meta

# What an entry decodes to, fixed by its key's kind (see gate.py): Names, Versions,
# Package, an installs CSV's lines, or None for a file without content of its own.
D = TypeVar("D", covariant=True)


class Memo:
    """One value a renderer derives from an entry and keeps with it (web/fastpath.py keeps
    its pre-encoded answer here). It lives exactly as long as the entry: when the cache
    drops or replaces the entry, the memo goes too, so no separate table needs a bound."""

    __slots__ = ("size", "value")

    def __init__(self) -> None:
        self.value: object = None
        # Bytes the value holds that the entry does not (a hot tarball's body), counted
        # against the cache's memory budget: tell the cache when it changes (Cache.recount).
        self.size = 0


class Status(enum.Enum):
    HIT = "HIT"
    MISS = "MISS"
    STALE = "STALE"
    REVALIDATED = "REVALIDATED"


@dataclass(frozen=True, slots=True)
class Entry(Generic[D]):
    """A metadata file (registry file, installs CSV), verified, as held in memory."""

    key: CacheKey
    body: bytes
    meta: Meta
    decoded: D
    # Not copied by dataclasses.replace(): a changed entry is rendered anew.
    memo: Memo = field(default_factory=Memo, init=False, compare=False, repr=False)

    @property
    def etag(self) -> str:
        return f'"{self.meta.sha256}"'

    @property
    def last_modified(self) -> str:
        return self.meta.upstream_last_modified or formatdate(self.meta.stored_at, usegmt=True)


@dataclass(frozen=True, slots=True)
class Answer(Generic[D]):
    """The cache's answer for a metadata file: the entry, and how it was had (X-Cache)."""

    entry: Entry[D]
    status: Status


@dataclass(frozen=True, slots=True)
class StoredFile:
    """An immutable object on disk, served with sendfile."""

    key: CacheKey
    path: Path
    size: int
    sha256: str
    stored_at: float
    memo: Memo = field(default_factory=Memo, init=False, compare=False, repr=False)

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'

    @property
    def last_modified(self) -> str:
        return formatdate(self.stored_at, usegmt=True)


@dataclass(slots=True)
class Counters:
    """What the cache did, for logs, metrics and the status page."""

    verification_failures: int = 0
    upstream_fetches: int = 0
    stale_served: int = 0
    recent_failures: list[str] = field(default_factory=list)

    def failure(self, message: str) -> None:
        self.verification_failures += 1
        self.recent_failures.append(f"{formatdate(time.time(), usegmt=True)} {message}")
        del self.recent_failures[:-20]
