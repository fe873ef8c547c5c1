"""What the policy remembers about objects upstream failed on, or does not have.

Without this memory every client request for a broken or missing object would be
one more upstream request: under a sustained fault (a tampered signature, a 500,
a timeout) thousands a second, and for names that do not exist, an amplifier any
client could aim at repo.hex.pm.

- ``Backoff``: after a failure for a key, upstream is not asked about that key
  again for ``base`` seconds, doubling with each further failure up to ``cap``;
  meanwhile the cached copy (if any) is served, or the failure is repeated.
- ``Negative``: an object upstream said it does not have is not asked for again
  until its entry expires (``negative_ttl``).

Both are plain in-memory maps, per process (``verdicts.py`` tells the other
workers), bounded so that clients naming endless distinct objects cannot grow them
without limit. Time comes from the caller (the cache's clock), so tests can drive it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import HexproxyError, UpstreamUnavailable
from ..store.cachekey import CacheKey

LIMIT = 100_000  # keys remembered per map; the oldest are forgotten first


@dataclass(slots=True)
class Failure:
    """The last failure of one key and when upstream may be asked about it again.

    Only the error's text and status are kept, never the exception: its traceback
    would keep the failed fetch's frames (and a body of up to max_registry_size)
    alive for as long as the key backs off."""

    message: str
    http_status: int
    code: str
    count: int
    until: float

    @property
    def reason(self) -> str:
        return f"{self.message} (backing off)"

    def again(self) -> HexproxyError:
        """A fresh error for a client that has no cached copy to fall back on: the same
        status as the failure, and a message saying why upstream was not asked. (The same
        text every time, so that the log can aggregate it.)"""
        repeated = UpstreamUnavailable(self.reason)
        repeated.http_status = self.http_status
        repeated.code = self.code
        return repeated


class Backoff:
    def __init__(self, cap: float, base: float = 1.0, limit: int = LIMIT) -> None:
        self.cap = max(cap, 0.0)
        self.base = min(base, self.cap)
        self.limit = limit
        self._failures: dict[CacheKey, Failure] = {}

    def failed(self, key: CacheKey, error: HexproxyError, now: float) -> Failure:
        previous = self._failures.pop(key, None)
        # A key that has been quiet for longer than the cap starts over.
        count = 1
        if previous is not None and now - previous.until < self.cap:
            count = previous.count + 1
        interval = min(self.base * 2 ** min(count - 1, 32), self.cap)
        failure = Failure(error.message, error.http_status, error.code, count, now + interval)
        self._failures[key] = failure  # re-inserted: the dict stays oldest-first
        _trim(self._failures, self.limit)
        return failure

    def holding(self, key: CacheKey, now: float) -> Failure | None:
        """The failure that keeps upstream from being asked about ``key`` now, if any.
        (An expired one is kept: if the next attempt fails too, the interval grows.)"""
        failure = self._failures.get(key)
        if failure is None or now >= failure.until:
            return None
        return failure

    def adopt(self, key: CacheKey, failure: Failure) -> None:
        """A failure another worker saw (``verdicts.py``)."""
        self._failures.pop(key, None)
        self._failures[key] = failure
        _trim(self._failures, self.limit)

    def succeeded(self, key: CacheKey) -> None:
        self._failures.pop(key, None)

    def __contains__(self, key: CacheKey) -> bool:
        return key in self._failures

    def __len__(self) -> int:
        return len(self._failures)


class Negative:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._until: dict[CacheKey, float] = {}

    def add(self, key: CacheKey, until: float) -> None:
        self._until.pop(key, None)
        self._until[key] = until
        _trim(self._until, self.limit)

    def active(self, key: CacheKey, now: float) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if now < until:
            return True
        del self._until[key]
        return False

    def discard(self, key: CacheKey) -> None:
        self._until.pop(key, None)

    def __contains__(self, key: CacheKey) -> bool:
        return key in self._until

    def __len__(self) -> int:
        return len(self._until)


def _trim(mapping: dict[CacheKey, Any], limit: int) -> None:
    for _ in range(len(mapping) - limit):
        del mapping[next(iter(mapping))]
