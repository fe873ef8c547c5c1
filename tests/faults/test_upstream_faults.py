"""Every way upstream can fail, under 200 concurrent clients: nobody gets wrong bytes,
nothing bad is stored, and the proxy serves correctly once upstream recovers."""

from __future__ import annotations

from typing import Any

import pytest

from hexproxy.web.state import CACHE
from tests.conftest import ProxyFactory, Upstream
from tests.fakes.hex_repo import FAULTS
from tests.faults.conftest import (
    CLIENTS,
    assert_never_wrong,
    cache_problems,
    get_many,
    settle,
)
from tests.support.clock import past_backoff

OBJECTS = {"tarball": "/tarballs/alpha-1.0.0.tar", "package": "/packages/alpha"}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("target", sorted(OBJECTS))
async def test_no_client_gets_wrong_bytes(
    upstream: Upstream, make_proxy: ProxyFactory, tmp_path: Any, fault: str, target: str
) -> None:
    path = OBJECTS[target]
    expected = upstream.repo.files[path.lstrip("/")]
    upstream.repo.trickle_delay = 0.0
    upstream.repo.fail(fault, path)
    # No breaker pause and no negative caching: this test is about bodies only.
    client = await make_proxy(
        upstream__read_timeout=0.3,
        upstream__failure_threshold=100_000,
        cache__negative_ttl=0,
    )
    url = str(client.make_url(path))

    answers = await get_many(url, CLIENTS)

    assert_never_wrong(answers, expected)
    if fault == "trickle":  # slow, but honest: everyone gets it
        assert all(a.status == 200 and a.body == expected for a in answers)
    if fault in ("500", "503", "hang", "404", "flip", "bad_signature"):
        # A tarball miss streams under a 200 and is cut short when the digest fails.
        assert not any(a.status == 200 and a.body is not None for a in answers)
    cache_dir = tmp_path / "cache"
    await settle(cache_dir)
    assert cache_problems(cache_dir, upstream.repo.files) == []

    upstream.repo.heal()
    await past_backoff(client.app[CACHE])  # the failed object is not asked for again before
    healed = await get_many(url, 5)
    assert all(a.status == 200 and a.body == expected for a in healed)
    await settle(cache_dir)
    assert cache_problems(cache_dir, upstream.repo.files) == []
    assert (
        cache_dir
        / ("tarballs/alpha/alpha-1.0.0.tar" if target == "tarball" else "registry/packages/alpha")
    ).exists()
