"""Requests for what upstream does not have, or cannot give right now, do not become
upstream requests: unknown releases, a tampered registry, a failing object. Time is
driven through the cache's clock (and the breaker's), never waited for."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hexproxy.web.state import CACHE
from tests.conftest import ProxyFactory, Upstream
from tests.support.clock import Clock, drive

NEGATIVE_TTL = 60.0


def _clocked(proxy: TestClient[Any, Any]) -> Clock:
    return drive(proxy.app[CACHE])


async def _get(proxy: TestClient[Any, Any], path: str) -> tuple[int, str, bytes]:
    async with proxy.get(path) as response:
        return response.status, response.headers.get("X-Cache", "-"), await response.read()


async def test_unknown_releases_cost_one_upstream_request_per_negative_ttl(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(cache__registry_ttl=86_400, cache__negative_ttl=NEGATIVE_TTL)
    clock = _clocked(proxy)
    assert (await _get(proxy, "/packages/alpha"))[0] == 200
    asked_before = upstream.repo.count("/packages/alpha")
    versions = [f"9.9.{i}" for i in range(100)]
    seconds = 600.0
    for step in range(100):  # 1,000 requests, 10 at a time, over 10 simulated minutes
        batch = [versions[(step * 10 + i) % 100] for i in range(10)]
        answers = await asyncio.gather(*(_get(proxy, f"/tarballs/alpha-{v}.tar") for v in batch))
        assert {status for status, _, _ in answers} == {404}
        clock.advance(seconds / 100)
    asked = upstream.repo.count("/packages/alpha") - asked_before
    assert 1 <= asked <= seconds / NEGATIVE_TTL + 1, asked
    assert not [s for s in upstream.repo.requests if s.path.startswith("/tarballs/")]


async def test_unknown_release_is_not_looked_up_while_upstream_is_failing(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(cache__registry_ttl=86_400, cache__negative_ttl=NEGATIVE_TTL)
    clock = _clocked(proxy)
    assert (await _get(proxy, "/packages/alpha"))[0] == 200
    clock.advance(NEGATIVE_TTL + 1)
    upstream.repo.fail("500", "/packages/beta")
    assert (await _get(proxy, "/packages/beta"))[0] == 502  # upstream is now failing
    asked = upstream.repo.count("/packages/alpha")
    for _ in range(20):
        status, _, body = await _get(proxy, "/tarballs/alpha-9.9.9.tar")
        assert status == 502
        assert b"cannot be asked now" in body
    assert upstream.repo.count("/packages/alpha") == asked
    # Once upstream answers again, the package file is looked at (once) and the
    # release is known not to exist.
    upstream.repo.heal()
    assert (await _get(proxy, "/packages/gamma"))[0] == 200
    for _ in range(5):
        assert (await _get(proxy, "/tarballs/alpha-9.9.9.tar"))[0] == 404
    assert upstream.repo.count("/packages/alpha") == asked + 1


@pytest.mark.parametrize("threshold", [3, 1_000_000], ids=["breaker", "backoff-alone"])
async def test_tampered_signatures_under_50_clients_cost_a_handful_of_requests_per_key(
    make_proxy: ProxyFactory,
    upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
    threshold: int,
) -> None:
    proxy = await make_proxy(cache__registry_ttl=5, upstream__failure_threshold=threshold)
    clock = _clocked(proxy)
    names = ["alpha", "beta", "gamma"]
    bodies = {name: (await _get(proxy, f"/packages/{name}"))[2] for name in names}
    seen = len(upstream.repo.requests)
    upstream.repo.fail("bad_signature")
    caplog.set_level(logging.INFO, logger="hexproxy")
    results: Counter[str] = Counter()
    for _ in range(60):  # 30 simulated seconds, a request round every half second
        paths = [names[i % 3] for i in range(50)]
        answers = await asyncio.gather(*(_get(proxy, f"/packages/{n}") for n in paths))
        for name, (status, cache_result, body) in zip(paths, answers, strict=True):
            assert (status, body) == (200, bodies[name])  # never the tampered bytes
            results[cache_result] += 1
        clock.advance(0.5)
    per_key = Counter(s.path for s in upstream.repo.requests[seen:])
    assert set(per_key) <= {f"/packages/{name}" for name in names}
    # Backoff alone: 1, 2, 4, 8, 16 s apart, 5 requests in the 25 stale seconds.
    assert max(per_key.values()) <= 6, per_key
    assert results["STALE"] > 2000
    breaker = proxy.app[CACHE].upstream.repository.breaker
    if threshold == 3:
        assert breaker.state.value == "paused"  # bad answers are failures too
        assert sum(per_key.values()) <= 3 * 2
    # Every stale reason names its own object (never the breaker's last error).
    for record in caplog.records:
        message = record.getMessage()
        found = re.match(r"serving stale (/packages/\w+): (.*)", message)
        if found:
            others = {f"/packages/{n}" for n in names} - {found[1]}
            assert not any(other in found[2] for other in others), message
