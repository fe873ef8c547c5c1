"""When upstream fails, answers keep coming from the cache, fast."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hexproxy.store.cachekey import package_key
from hexproxy.web.state import CACHE
from tests.conftest import ProxyFactory, Upstream
from tests.fakes.hex_repo import BlackHole
from tests.support.clock import drive
from tests.support.user_agents import AS_HEX_2_5


async def _warm(proxy: TestClient[Any, Any]) -> bytes:
    response = await proxy.get("/packages/alpha")
    assert response.status == 200
    return await response.read()


@pytest.mark.parametrize("fault", ["500", "503", "hang", "truncate", "reset", "bad_signature"])
async def test_stale_copy_served_for_each_failure_kind(
    make_proxy: ProxyFactory, upstream: Upstream, fault: str
) -> None:
    proxy = await make_proxy(cache__registry_ttl=0)
    body = await _warm(proxy)
    upstream.repo.fail(fault)
    started = time.monotonic()
    response = await proxy.get("/packages/alpha")
    assert response.status == 200
    assert await response.read() == body
    assert response.headers["X-Cache"] == "STALE"
    assert response.headers["Warning"].startswith("110 ")
    assert time.monotonic() - started < 5  # a generous bound that only catches a hang
    upstream.repo.heal()


async def test_stale_copy_served_when_connection_refused(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(cache__registry_ttl=0)
    body = await _warm(proxy)
    tarball = await (await proxy.get("/tarballs/beta-2.1.0.tar")).read()
    await upstream.stop()
    response = await proxy.get("/packages/alpha")
    assert (response.status, response.headers["X-Cache"]) == (200, "STALE")
    assert await response.read() == body
    hit = await proxy.get("/tarballs/beta-2.1.0.tar")
    assert (hit.status, await hit.read()) == (200, tarball)


async def test_miss_with_upstream_down_is_502_with_hex_message(
    proxy: TestClient[Any, Any], upstream: Upstream
) -> None:
    await upstream.stop()
    response = await proxy.get("/packages/alpha", headers=AS_HEX_2_5)
    assert response.status == 502
    assert response.headers["Content-Type"].startswith("text/plain")
    message = response.headers["x-hex-message"]
    assert message.startswith('"') and message.endswith('"; level=fatal')
    assert '"' not in message[1 : -len('"; level=fatal')]


async def test_miss_with_upstream_hanging_is_504(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(upstream__read_timeout=0.5)
    upstream.repo.fail("hang")
    response = await proxy.get("/packages/alpha")
    assert response.status == 504
    upstream.repo.heal()


async def test_revalidation_uses_etag_and_304_refreshes(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(cache__registry_ttl=0)
    body = await _warm(proxy)
    response = await proxy.get("/packages/alpha")
    assert response.headers["X-Cache"] == "REVALIDATED"
    assert await response.read() == body
    conditional = [s for s in upstream.repo.requests if s.path == "/packages/alpha"][1]
    assert conditional.headers["If-None-Match"] == upstream.repo.etag_of(body)
    assert conditional.headers["Accept-Encoding"] == "identity"
    assert conditional.headers["User-Agent"].startswith("hexproxy/")


async def test_fresh_entry_does_not_touch_upstream(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(cache__registry_ttl=300)
    await _warm(proxy)
    for _ in range(5):
        assert (await proxy.get("/packages/alpha")).headers["X-Cache"] == "HIT"
    assert upstream.repo.count("/packages/alpha") == 1


async def test_black_holed_upstream_opens_the_circuit(make_proxy: ProxyFactory) -> None:
    """A silent upstream costs a few short waits, then answers come at once."""
    warm = await make_proxy()  # fill the cache through the real upstream
    for name in ("alpha", "beta", "gamma"):
        assert (await warm.get(f"/packages/{name}")).status == 200
    hole = BlackHole()
    port = await hole.start()
    try:
        proxy = await make_proxy(
            upstream__url=f"http://127.0.0.1:{port}",
            cache__registry_ttl=0,
            upstream__stale_timeout=0.3,
            upstream__read_timeout=30,
            upstream__failure_threshold=3,
            upstream__retry_after=60,
        )
        timings = []
        for name in ("alpha", "beta", "gamma", "alpha", "beta", "gamma", "alpha"):
            started = time.monotonic()
            response = await proxy.get(f"/packages/{name}")
            timings.append(time.monotonic() - started)
            assert (response.status, response.headers["X-Cache"]) == (200, "STALE")
        breaker = proxy.app[CACHE].upstream.repository.breaker
        assert breaker.state.value == "paused"
        # Each wait that runs out counts one failure: three opened the circuit, and
        # none came after, so no later request waited for the hole.
        assert breaker.failures == 3
        assert max(timings) < 10, timings  # a hang guard: read_timeout is 30 s
        await proxy.close()
    finally:
        await hole.close()


async def test_circuit_closes_again_after_the_pause(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(cache__registry_ttl=0, upstream__failure_threshold=2)
    cache = proxy.app[CACHE]
    clock = drive(cache)
    breaker = cache.upstream.repository.breaker
    body = await _warm(proxy)
    assert (await proxy.get("/packages/beta")).status == 200
    upstream.repo.fail("500")
    # Failures of different objects add up: two of them open the circuit.
    for name in ("alpha", "beta"):
        assert (await proxy.get(f"/packages/{name}")).headers["X-Cache"] == "STALE"
    assert breaker.state.value == "paused"
    calls = len(upstream.repo.requests)
    for name in ("alpha", "beta", "alpha"):
        assert (await proxy.get(f"/packages/{name}")).headers["X-Cache"] == "STALE"
    assert len(upstream.repo.requests) == calls  # paused: not asked
    upstream.repo.heal()
    clock.advance(cache.config.upstream.retry_after)
    response = await proxy.get("/packages/alpha")
    assert (response.headers["X-Cache"], await response.read()) == ("REVALIDATED", body)
    assert breaker.state.value == "up"


async def test_offline_mode_never_contacts_upstream(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    online = await make_proxy()
    body = await _warm(online)
    await online.close()
    before = len(upstream.repo.requests)
    offline = await make_proxy(upstream__offline=True, cache__registry_ttl=0)
    response = await offline.get("/packages/alpha")
    assert (response.status, await response.read()) == (200, body)
    missing = await offline.get("/packages/beta", headers=AS_HEX_2_5)
    assert missing.status == 404
    assert "offline cache" in missing.headers["x-hex-message"]
    tarball = await offline.get("/tarballs/alpha-1.0.0.tar")
    assert tarball.status == 404
    assert len(upstream.repo.requests) == before


async def test_upstream_404_passes_through_and_is_cached_briefly(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(cache__negative_ttl=60)
    for _ in range(3):
        response = await proxy.get("/packages/nosuchpackage", headers=AS_HEX_2_5)
        assert response.status == 404
        assert "x-hex-message" not in response.headers
    assert upstream.repo.count("/packages/nosuchpackage") == 1


async def test_negative_cache_expires(make_proxy: ProxyFactory, upstream: Upstream) -> None:
    proxy = await make_proxy(cache__negative_ttl=0)
    for _ in range(2):
        assert (await proxy.get("/packages/nosuchpackage")).status == 404
    assert upstream.repo.count("/packages/nosuchpackage") == 2


async def test_offline_release_missing_from_cached_package_says_offline(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    online = await make_proxy()
    await _warm(online)
    await online.close()
    offline = await make_proxy(upstream__offline=True)
    response = await offline.get("/tarballs/alpha-9.9.9.tar", headers=AS_HEX_2_5)
    assert response.status == 404
    assert "offline cache" in response.headers["x-hex-message"]


async def test_revalidation_restores_a_file_removed_by_an_operator(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(cache__registry_ttl=0)
    body = await _warm(proxy)
    stored = proxy.app[CACHE].storage.path(package_key("alpha"))
    stored.unlink()  # what `hexproxy cache rm alpha` does while the server runs
    response = await proxy.get("/packages/alpha")
    assert response.headers["X-Cache"] == "REVALIDATED"
    assert stored.read_bytes() == body
