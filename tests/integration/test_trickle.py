"""A trickling upstream: read_timeout bounds the silence between two reads, never the
whole body (config.example.toml); total_timeout bounds the whole request. Clients of the
miss see the bytes as they arrive, not only once the fetch is done."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.conftest import ProxyFactory, Upstream

GAMMA = "/tarballs/gamma-0.1.0.tar"
PACE = 0.003  # the fake sends 16 bytes, then waits this long


async def test_a_slow_but_steady_body_outlasts_read_timeout(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    read_timeout = 0.5
    proxy = await make_proxy(upstream__read_timeout=read_timeout)
    expected = upstream.repo.files[GAMMA.lstrip("/")]
    upstream.repo.fail("trickle", GAMMA)
    upstream.repo.trickle_delay = PACE
    started = time.monotonic()
    response = await proxy.get(GAMMA)
    assert response.status == 200
    first = await response.content.read(1)
    first_at = time.monotonic() - started
    rest = await response.read()
    took = time.monotonic() - started
    assert first + rest == expected
    # The whole body took several read_timeouts, each gap far less than one.
    assert took > 2 * read_timeout, took
    # And the client saw the first bytes long before the last ones.
    assert first_at < took / 2, (first_at, took)
    assert upstream.repo.count(GAMMA) == 1


async def test_total_timeout_bounds_the_whole_request(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(upstream__read_timeout=0.5, upstream__total_timeout=0.3)
    upstream.repo.fail("trickle", GAMMA)
    upstream.repo.trickle_delay = PACE
    response = await proxy.get(GAMMA)
    if response.status == 200:  # headers were out before the bound
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    else:
        assert response.status == 504
