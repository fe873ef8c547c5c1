"""What the cache hands out: values the policy layer returns and the HTTP layer renders.

Kept apart from ``cache.py`` so the renderers (web/responses.py, web/fastpath.py) and the
policy share these types without the renderers depending on the policy's machinery.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

from ..store.cachekey import CacheKey
from ..store.storage import Meta


class Status(enum.Enum):
    HIT = "HIT"
    MISS = "MISS"
    STALE = "STALE"
    REVALIDATED = "REVALIDATED"


@dataclass(frozen=True, slots=True)
class Entry:
    """A small object, verified, as served from memory."""

    key: CacheKey
    body: bytes
    meta: Meta
    decoded: object | None = None

    @property
    def etag(self) -> str:
        return f'"{self.meta.sha256}"'

    @property
    def last_modified(self) -> str:
        return self.meta.upstream_last_modified or formatdate(self.meta.stored_at, usegmt=True)


@dataclass(frozen=True, slots=True)
class Small:
    entry: Entry
    status: Status


@dataclass(frozen=True, slots=True)
class StoredFile:
    """An immutable object on disk, served with sendfile."""

    key: CacheKey
    path: Path
    size: int
    sha256: str
    stored_at: float

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
