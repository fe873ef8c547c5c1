"""The server keeps its cache under max_size by evicting least recently used tarballs."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hexproxy.store import inventory
from hexproxy.store.eviction import LOW_WATER, Evictor
from hexproxy.web.ops import EVICTOR
from tests.conftest import ProxyFactory, Upstream
from tests.support.waiting import wait_until

ORDER = ["beta-2.1.0", "gamma-0.1.0", "alpha-1.0.0", "beta-2.0.0", "alpha-1.1.0"]


def tarball(cache: Path, release: str) -> Path:
    return cache / "tarballs" / release.split("-")[0] / f"{release}.tar"


async def get(proxy: TestClient[Any, Any], path: str) -> str:
    response = await proxy.get(path)
    await response.read()
    assert response.status == 200, path
    return response.headers.get("X-Cache", "")


def evictor(proxy: TestClient[Any, Any]) -> Evictor:
    return proxy.server.app[EVICTOR]


def one_second_per_reading() -> Callable[[], float]:
    """A clock for the access recorder: each hit a second after the one before, starting
    after anything already stored, so the use order is exact without waiting."""
    return itertools.count(time.time() + 1).__next__


async def fill_in_order(proxy: TestClient[Any, Any]) -> None:
    """Store every tarball, then use them in ORDER (oldest use first)."""
    for release in ORDER:
        await get(proxy, f"/tarballs/{release}.tar")
    evictor(proxy).access.clock = one_second_per_reading()
    for release in ORDER:
        assert await get(proxy, f"/tarballs/{release}.tar") == "HIT"


def cached_size(cache: Path) -> int:
    return inventory.total_size(inventory.scan(inventory.FileStorage(cache)))


async def test_hits_are_recorded_as_last_access_on_flush(
    proxy: TestClient[Any, Any], tmp_path: Path
) -> None:
    await get(proxy, "/tarballs/alpha-1.0.0.tar")
    path = tarball(tmp_path / "cache", "alpha-1.0.0")
    old = time.time() - 3600
    os.utime(path, (old, old))
    before_hit = time.time()
    assert await get(proxy, "/tarballs/alpha-1.0.0.tar") == "HIT"
    assert path.stat().st_mtime == old  # nothing written on the hit path itself
    await evictor(proxy).flush()
    assert path.stat().st_mtime >= before_hit - 0.01


async def test_eviction_removes_least_recently_used_until_under_the_limit(
    make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    # First fill without a limit to learn the sizes, then run with one.
    sizer = await make_proxy()
    await fill_in_order(sizer)
    total = cached_size(cache)
    sizes = {r: tarball(cache, r).stat().st_size for r in ORDER}
    max_size = total - sizes[ORDER[0]] // 2  # over the limit by half the oldest tarball
    await evictor(sizer).stop()  # one evictor per cache directory: let the next one be it

    proxy = await make_proxy(cache__max_size=max_size)
    # Only the round below runs, so the order is deterministic; stop() lets a startup
    # round that has begun finish first.
    await evictor(proxy).stop()
    await fill_in_order(proxy)  # refetch anything the startup round took; use order is ORDER
    removed = await evictor(proxy).run_once()

    names = [item.key.path.rsplit("/", 1)[1].removesuffix(".tar") for item in removed]
    target, expected, left = int(max_size * LOW_WATER), [], total
    for release in ORDER:  # the same rule, by hand: oldest first, down to the low-water mark
        if left <= target:
            break
        expected.append(release)
        left -= sizes[release]
    assert names == expected and len(names) >= 1
    assert cached_size(cache) <= max_size * LOW_WATER
    assert all(not tarball(cache, r).exists() for r in expected)
    assert all(tarball(cache, r).exists() for r in ORDER[len(expected) :])
    for name in ("alpha", "beta", "gamma"):  # registry files are never evicted
        assert (cache / "registry" / "packages" / name).exists()


async def test_evicted_tarballs_are_fetched_again(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(cache__max_size=1)
    await get(proxy, "/tarballs/alpha-1.0.0.tar")
    await evictor(proxy).run_once()
    assert await get(proxy, "/tarballs/alpha-1.0.0.tar") == "MISS"
    assert upstream.repo.count("/tarballs/alpha-1.0.0.tar") == 2


async def test_the_background_round_evicts_soon_after_misses(
    make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    proxy = await make_proxy(cache__max_size=4096)
    # Misses push for a round only once a first one has measured the cache.
    await wait_until(lambda: evictor(proxy).usage is not None, "the first round")
    for release in ORDER:
        await get(proxy, f"/tarballs/{release}.tar")
    await wait_until(
        lambda: evictor(proxy).evicted >= 1 and cached_size(tmp_path / "cache") <= 4096,
        "a round to bring the cache under max_size",
    )


async def test_stop_lets_a_round_that_has_begun_finish(
    make_proxy: ProxyFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    filler = await make_proxy()
    for release in ORDER:
        await get(filler, f"/tarballs/{release}.tar")
    removing, go_on = threading.Event(), threading.Event()
    execute = inventory.execute

    def held_execute(*args: Any) -> Any:
        removing.set()
        go_on.wait(30)
        return execute(*args)

    monkeypatch.setattr(inventory, "execute", held_execute)
    await evictor(filler).stop()  # one evictor per cache directory: let the next one be it
    proxy = await make_proxy(cache__max_size=1)
    await wait_until(removing.is_set, "the startup round to start removing")
    stopping = asyncio.ensure_future(evictor(proxy).stop())
    loop_task = evictor(proxy).task
    assert loop_task is not None
    await wait_until(loop_task.done, "the eviction loop to be cancelled")
    assert not stopping.done()  # still waiting for the removal thread
    go_on.set()
    await stopping
    assert evictor(proxy).evicted == len(ORDER)
    assert not any(tarball(tmp_path / "cache", r).exists() for r in ORDER)


async def test_no_eviction_while_upstream_is_unreachable(
    make_proxy: ProxyFactory, upstream: Upstream, tmp_path: Path
) -> None:
    proxy = await make_proxy(cache__max_size=1, upstream__failure_threshold=1)
    await get(proxy, "/tarballs/alpha-1.0.0.tar")
    await upstream.stop()
    assert (await proxy.get("/packages/beta")).status == 502  # the breaker opens
    assert await evictor(proxy).run_once() == []
    assert tarball(tmp_path / "cache", "alpha-1.0.0").exists()


async def test_no_eviction_when_offline(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    filler = await make_proxy()
    await get(filler, "/tarballs/alpha-1.0.0.tar")
    proxy = await make_proxy(cache__max_size=1, upstream__offline=True)
    assert await evictor(proxy).run_once() == []
    assert await get(proxy, "/tarballs/alpha-1.0.0.tar") == "HIT"
