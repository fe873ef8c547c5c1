"""Time a test moves by hand, for the cache's (and the breaker's) time-based rules:
TTLs, the negative cache, per-object backoff, the breaker's pause. No test waits for
them to pass in real time."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from hexproxy.upstream.breaker import CircuitBreaker


class Clock:
    """A clock that stands still until told to move; pass it as ``clock=``."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def later(cache: Any, seconds: float) -> None:
    """From now on the cache lives ``seconds`` in the future (on top of any earlier shift):
    what it remembers with a deadline (backoff, negative entries, freshness) ages by that."""
    base = cache.clock
    cache.clock = lambda: base() + seconds


async def past_backoff(cache: Any) -> None:
    """Let the longest per-object backoff (``retry_after``) run out, once the failed
    fetches have finished (a failure recorded after the jump would start a new one)."""
    for _ in range(500):  # bounded: the fetches end on their own
        if not cache.fetches_running():
            break
        await asyncio.sleep(0.01)
    assert not cache.fetches_running(), "fetches still running"
    later(cache, cache.config.upstream.retry_after + 1)


def drive(cache: Any) -> Clock:
    """Put the cache and its upstream hosts' circuit breakers on one hand-moved clock."""
    clock = Clock()
    cache.clock = clock
    upstream = cache.upstream
    for name in ("repository", "builds"):
        host = getattr(upstream, name)
        breaker = CircuitBreaker(host.breaker.threshold, host.breaker.retry_after, clock)
        setattr(upstream, name, dataclasses.replace(host, breaker=breaker))
    upstream.hosts = (upstream.repository, upstream.builds)
    return clock
