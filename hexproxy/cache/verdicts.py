"""What upstream said about one object, remembered here and told to the other workers.

``backoff.py`` keeps, in this process, the objects upstream does not have (for
``negative_ttl``) and those it failed on (backing off). With ``--workers N`` each
worker would learn that on its own, with one upstream request each; so every verdict
is also written to ``state/verdicts/`` in the cache directory (``store.statefiles``),
and a worker about to ask upstream reads it first. Only misses read it, in a thread,
and only when this process remembers nothing about the object; a hit never looks.

A verdict is written before the fetch's turn ends (``turns.py``, the download's lock),
so the worker whose turn comes next finds it. Files for verdicts long over are swept
when new ones are written, at most every ``SWEEP_EVERY`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import CircuitOpen, HexproxyError, NotFound, UpstreamError, VerificationError
from ..store.cachekey import CacheKey
from ..store.statefiles import StateDir
from .backoff import Backoff, Failure, Negative

log = logging.getLogger("hexproxy.cache")

GROUP = "verdicts"
SWEEP_EVERY = 600.0  # seconds


class Clocked(Protocol):
    """Whose clock verdicts are kept by: the cache's, looked up at each use (tests move
    it by hand, replacing it)."""

    clock: Callable[[], float]


class Verdicts:
    def __init__(
        self,
        state: StateDir,
        negative: Negative,
        backoff: Backoff,
        negative_ttl: float,
        owner: Clocked,
    ) -> None:
        self.state = state
        self.negative = negative
        self.backoff = backoff
        self.negative_ttl = negative_ttl
        self._owner = owner
        self._swept = self.clock()

    def clock(self) -> float:
        return self._owner.clock()

    async def learn(self, key: CacheKey) -> None:
        """Take what another worker learned about ``key``, unless we know something."""
        now = self.clock()
        if self.negative.active(key, now) or self.backoff.holding(key, now) is not None:
            return
        try:
            value = await asyncio.to_thread(self.state.read, _name(key))
        except OSError:
            return
        if value is not None:
            self._adopt(key, value, now)

    def _adopt(self, key: CacheKey, value: dict[str, Any], now: float) -> None:
        until = value.get("until")
        if not isinstance(until, int | float) or until <= now:
            return
        if value.get("missing") is True:
            self.negative.add(key, until)
            return
        try:
            failure = Failure(
                str(value["message"]),
                int(value["http_status"]),
                str(value["code"]),
                int(value["count"]),
                float(until),
            )
        except (KeyError, TypeError, ValueError):
            return
        self.backoff.adopt(key, failure)

    async def missing(self, key: CacheKey, until: float) -> None:
        """Upstream does not have ``key``: not asked again, by any worker, until then."""
        self.negative.add(key, until)
        await self._tell(key, {"missing": True, "until": until})

    async def failed(self, key: CacheKey, error: HexproxyError) -> Failure:
        """Upstream failed on ``key``: every worker backs off."""
        failure = self.backoff.failed(key, error, self.clock())
        await self._tell(
            key,
            {
                "until": failure.until,
                "message": failure.message,
                "http_status": failure.http_status,
                "code": failure.code,
                "count": failure.count,
            },
        )
        return failure

    async def settle(self, key: CacheKey, error: HexproxyError) -> None:
        """What a failed fetch means for ``key``: missing, backing off, or nothing (a
        paused breaker asked nobody)."""
        if isinstance(error, NotFound):
            await self.missing(key, self.clock() + self.negative_ttl)
        elif isinstance(error, UpstreamError | VerificationError) and not isinstance(
            error, CircuitOpen
        ):
            await self.failed(key, error)

    async def succeeded(self, key: CacheKey) -> None:
        """Upstream gave ``key``: forget any verdict on it (the file only if we knew one:
        most fetches never failed, and cost no extra I/O here)."""
        knew = key in self.backoff or key in self.negative
        self.backoff.succeeded(key)
        self.negative.discard(key)
        if knew:
            await self._run(lambda: self.state.remove(_name(key)))

    async def _tell(self, key: CacheKey, value: dict[str, Any]) -> None:
        now = self.clock()
        sweep = now - self._swept >= SWEEP_EVERY
        if sweep:
            self._swept = now

        def write() -> None:
            self.state.write(_name(key), value)
            if sweep:
                self.state.sweep(GROUP, lambda v: not _pending(v, now))

        await self._run(write)

    @staticmethod
    async def _run(work: Callable[[], None]) -> None:
        try:
            await asyncio.to_thread(work)
        except OSError as exc:
            # A read-only or full cache: this worker still remembers; the others ask.
            log.warning("cannot tell the other workers (%s)", exc.strerror)


def _name(key: CacheKey) -> str:
    return f"{GROUP}/{key.path.replace('/', '_')}"


def _pending(value: dict[str, Any], now: float) -> bool:
    until = value.get("until")
    return isinstance(until, int | float) and until > now
