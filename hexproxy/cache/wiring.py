"""Wiring: the one place that builds the cache and what it stands on.

Both the server (``web.app.create_app``) and the command line build their cache
here, so ``hexproxy cache verify`` or ``warm`` check bytes exactly as the server
does without depending on the HTTP layer.
"""

from __future__ import annotations

from ..config import Config, load_public_key_pem
from ..registry import load_public_key
from ..store.storage import FileStorage
from ..upstream.breaker import CircuitBreaker
from ..upstream.client import Upstream
from .policy import Cache


def build_cache(config: Config) -> Cache:
    """The policy object and what it stands on (no I/O yet, no event loop needed).

    Order: the verifying key first (a bad key must stop us before we serve),
    then storage, then the upstream client behind its circuit breaker, then the
    cache that ties them together.
    """
    pem = load_public_key_pem(config)
    key = load_public_key(pem)
    storage = FileStorage(config.cache_dir)
    breaker = CircuitBreaker(config.upstream.failure_threshold, config.upstream.retry_after)
    upstream = Upstream(config.upstream, breaker)
    return Cache(config, storage, upstream, key)
