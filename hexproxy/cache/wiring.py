"""Wiring: the one place that builds the cache and what it stands on.

Both the server (``web.app.create_app``) and the command line build their cache
here, so ``hexproxy cache verify`` or ``warm`` check bytes exactly as the server
does without depending on the HTTP layer.
"""

from __future__ import annotations

from ..config import Config, load_public_key_pem, read_key_file
from ..installs import ELIXIR_INSTALLS_PUBLIC_KEY_PEM
from ..registry import load_public_key
from ..store.backends import open_s3
from ..store.storage import FileStorage
from ..upstream.client import Upstream
from .gate import Gate
from .policy import Cache
from .shared import SharedTier


def build_gate(config: Config) -> Gate:
    """The verification gate, with the configured keys (or the built-in ones)."""
    installs_pem = read_key_file(
        "[upstream] installs_public_key", config.upstream.installs_public_key
    )
    return Gate(
        registry_key=load_public_key(load_public_key_pem(config)),
        installs_key=load_public_key(installs_pem or ELIXIR_INSTALLS_PUBLIC_KEY_PEM),
        repository=config.upstream.repo_name,
        max_uncompressed=config.upstream.max_registry_size,
    )


def build_cache(config: Config) -> Cache:
    """The policy object and what it stands on (no I/O yet, no event loop needed).

    Order: the verifying keys first (a bad key must stop us before we serve),
    then storage (the cache directory, and behind it the shared object store when
    ``[store] kind = "s3"``; its client connects on first use), then the upstream
    client (one circuit breaker per upstream host), then the cache that ties them together.
    """
    gate = build_gate(config)
    storage = FileStorage(config.cache_dir)
    shared = build_shared(config)
    upstream = Upstream(config.upstream)
    upstream.share_pauses(storage.state)  # one verdict on each upstream host for all workers
    return Cache(config, storage, upstream, gate, shared=shared)


def build_shared(config: Config) -> SharedTier | None:
    """The object store replicas share, if one is configured."""
    if config.store.kind == "s3":
        return SharedTier(open_s3(config.store))
    return None
