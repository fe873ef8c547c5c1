"""Bundles and the shared store: ``import`` shares what it added, ``export`` can take
everything the bucket holds.

Both go through the cache, so nothing is trusted on the way: an export brings each
bucket object onto the local disk through the same verification a replica does
(offline, so nothing is fetched upstream), and an import publishes only what it has
just verified and stored.
"""

from __future__ import annotations

import dataclasses

from ..cache.policy import Cache
from ..errors import HexproxyError
from ..store.cachekey import CacheKey, Kind, key_for_path


async def share_imported(cache: Cache, paths: list[str]) -> tuple[int, int]:
    """Publish what an import added to the shared store: (offered, failed).

    A bundle's registry file was last vouched for by upstream when it was exported
    (its validated time), not when it was imported, and that is the time that decides
    whether it is newer than the bucket's copy."""
    shared = cache.shared
    if shared is None:
        return 0, 0
    failed_before = _failed_puts(cache)
    offered = 0
    for path in paths:
        key = key_for_path(path)
        if key is None:
            continue
        body, meta = cache.storage.read(key), cache.storage.read_meta(key)
        if body is None or meta is None:
            continue
        if key.is_mutable:
            meta = dataclasses.replace(meta, stored_at=meta.validated_at)
        shared.publish(key, body, meta)
        offered += 1
    await shared.drain()
    return offered, _failed_puts(cache) - failed_before


def _failed_puts(cache: Cache) -> int:
    assert cache.shared is not None
    requests = cache.shared.requests
    return requests[("put", "error")] + requests[("put", "skipped")]


async def bring_local(cache: Cache) -> tuple[list[CacheKey], list[str]]:
    """Every registry file and tarball in the shared store, verified onto the local disk;
    returns the keys brought, and what could not be (one line each)."""
    shared = cache.shared
    assert shared is not None
    keys = [
        listed.key
        async for listed in shared.store.list()
        if listed.key.is_registry or listed.key.kind is Kind.TARBALL
    ]
    brought: list[CacheKey] = []
    problems: list[str] = []
    for key in sorted(keys, key=lambda k: (not k.is_registry, k.path)):
        try:
            if key.is_registry:
                await cache.get_metadata(key)
            else:
                await cache.fetch_file(key)
        except HexproxyError as exc:
            problems.append(f"{key.path}: {exc.message}")
            continue
        brought.append(key)
    return brought, problems
