"""The event loop never waits for the disk: every storage call a request makes runs in a
thread. A storage that records calls made on the event loop's thread is driven through
misses, hits, revalidations, removals, HEAD, 304, unknown releases, a tampered tarball
and a restart on the same directory."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hexproxy.config import Config
from hexproxy.store.cachekey import CacheKey, package_key
from hexproxy.store.storage import FileStorage, Meta
from hexproxy.web import create_app
from hexproxy.web.state import CACHE
from tests.conftest import Upstream


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class LoopGuardedStorage(FileStorage):
    """FileStorage that notes every call made on a thread running an event loop."""

    def __init__(self, root: Path, violations: list[str]) -> None:
        super().__init__(root)
        self.violations = violations
        self.calls = 0

    def _check(self, name: str) -> None:
        self.calls += 1
        if _on_loop():
            stack = "".join(traceback.format_stack(limit=6)[:-2])
            self.violations.append(f"storage.{name} on the event loop, from:\n{stack}")

    def prepare(self) -> int:
        self._check("prepare")
        return super().prepare()

    def stat(self, key: CacheKey) -> Any:
        self._check("stat")
        return super().stat(key)

    def read(self, key: CacheKey) -> bytes | None:
        self._check("read")
        return super().read(key)

    def read_meta(self, key: CacheKey) -> Meta | None:
        self._check("read_meta")
        return super().read_meta(key)

    def write_meta(self, key: CacheKey, meta: Meta) -> None:
        self._check("write_meta")
        super().write_meta(key, meta)

    def put(self, key: CacheKey, data: bytes, meta: Meta) -> None:
        self._check("put")
        super().put(key, data, meta)

    def commit(self, temp: Path, key: CacheKey, meta: Meta) -> None:
        self._check("commit")
        super().commit(temp, key, meta)

    def discard(self, temp: Path) -> None:  # type: ignore[override]
        self._check("discard")
        FileStorage.discard(temp)

    def delete(self, key: CacheKey) -> bool:
        self._check("delete")
        return super().delete(key)

    def iter_keys(self) -> Iterator[CacheKey]:
        self._check("iter_keys")
        return super().iter_keys()


@pytest.fixture
def guarded_proxy(
    aiohttp_client: Any, proxy_config: Callable[..., Config]
) -> tuple[Callable[[], Any], list[str], list[LoopGuardedStorage]]:
    violations: list[str] = []
    storages: list[LoopGuardedStorage] = []

    async def start() -> Any:
        config = proxy_config(cache__registry_ttl=0)
        app = create_app(config)
        storage = LoopGuardedStorage(config.cache_dir, violations)
        app[CACHE].storage = storage
        storages.append(storage)
        return await aiohttp_client(app)

    return start, violations, storages


async def test_no_storage_call_runs_on_the_event_loop(
    guarded_proxy: tuple[Callable[[], Any], list[str], list[LoopGuardedStorage]],
    upstream: Upstream,
) -> None:
    start, violations, storages = guarded_proxy
    proxy = await start()
    tarball = "/tarballs/alpha-1.0.0.tar"
    for path in ("/packages/alpha", "/packages/alpha", tarball, tarball, "/packages/beta"):
        response = await proxy.get(path)
        assert response.status == 200, path
        await response.read()
    etag = (await proxy.head(tarball)).headers["ETag"]
    assert (await proxy.get(tarball, headers={"If-None-Match": etag})).status == 304
    assert (await proxy.get("/tarballs/alpha-9.9.9.tar")).status == 404
    # An operator removes a registry file: the next revalidation stores it again.
    proxy.app[CACHE].storage.path(package_key("alpha")).unlink()
    assert (await proxy.get("/packages/alpha")).status == 200
    # A tampered tarball is cut off and its temp file dropped.
    upstream.repo.fail("flip", "/tarballs/gamma-0.1.0.tar")
    with pytest.raises(aiohttp.ClientPayloadError):
        await (await proxy.get("/tarballs/gamma-0.1.0.tar")).read()
    assert (await proxy.get("/_hexproxy/ready")).status == 200
    await proxy.close()
    # A restart on the same directory loads what is stored.
    again = await start()
    for path in ("/packages/beta", tarball):
        response = await again.get(path)
        assert response.status == 200, path
        await response.read()
    await again.close()
    assert all(storage.calls for storage in storages)  # the guard did see the calls
    assert violations == [], violations[0]
