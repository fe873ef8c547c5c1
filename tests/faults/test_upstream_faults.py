"""Every way upstream can fail, under 200 concurrent clients: nobody gets wrong bytes,
nothing bad is stored, and the proxy serves correctly once upstream recovers; in this
process and as ``hexproxy serve``."""

from __future__ import annotations

import pytest

from tests.conftest import Upstream
from tests.fakes.hex_repo import FAULTS
from tests.faults.conftest import (
    CLIENTS,
    StartProxy,
    assert_never_wrong,
    cache_problems,
    get_many,
)

OBJECTS = {"tarball": "/tarballs/alpha-1.0.0.tar", "package": "/packages/alpha"}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("target", sorted(OBJECTS))
async def test_no_client_gets_wrong_bytes(
    upstream: Upstream, start_proxy: StartProxy, fault: str, target: str
) -> None:
    path = OBJECTS[target]
    expected = upstream.repo.files[path.lstrip("/")]
    upstream.repo.trickle_delay = 0.0
    upstream.repo.fail(fault, path)
    # No breaker pause and no negative caching: this test is about bodies only.
    proxy = await start_proxy(
        upstream__read_timeout=0.3,
        upstream__failure_threshold=100_000,
        cache__negative_ttl=0,
    )
    url = proxy.make_url(path)

    answers = await get_many(url, CLIENTS)

    assert_never_wrong(answers, expected)
    if fault == "trickle":  # slow, but honest: everyone gets it
        assert all(a.status == 200 and a.body == expected for a in answers)
    if fault in ("500", "503", "hang", "404", "flip", "bad_signature"):
        # A tarball miss streams under a 200 and is cut short when the digest fails.
        assert not any(a.status == 200 and a.body is not None for a in answers)
    cache_dir = proxy.cache_dir
    await proxy.settle()
    assert cache_problems(cache_dir, upstream.repo.files) == []

    upstream.repo.heal()
    healed = await get_many(url, 5)
    assert all(a.status == 200 and a.body == expected for a in healed)
    await proxy.settle()
    assert cache_problems(cache_dir, upstream.repo.files) == []
    assert (
        cache_dir
        / ("tarballs/alpha/alpha-1.0.0.tar" if target == "tarball" else "registry/packages/alpha")
    ).exists()
