"""A builds host that cannot be reached (the usual case in a locked-down network) costs
package fetches nothing: it has its own circuit breaker, shown on /ready, the status
page and in the metrics."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hexproxy.breaker import State
from hexproxy.web.state import CACHE
from tests.conftest import ProxyFactory, Upstream
from tests.fakes.hex_repo import FakeHexRepo
from tests.integration.test_installs import publish_csv
from tests.integration.test_ops import sample, scrape

CSV = "/installs/hex-1.x.csv"


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback port that refuses connections: bound (so nobody else takes it), never
    listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_a_dead_builds_host_does_not_pause_package_fetches(
    make_proxy: ProxyFactory, upstream: Upstream, refused_url: str
) -> None:
    proxy = await make_proxy(
        upstream__builds_url=refused_url,
        upstream__failure_threshold=1,
        upstream__retry_after=600,
    )
    for _ in range(5):
        response = await proxy.get(CSV)
        assert response.status in (404, 502)
        assert "x-hex-message" not in response.headers  # not a Hex 2.0 / 2.5+ agent
    hosts = proxy.app[CACHE].upstream
    assert hosts.builds.breaker.state is State.PAUSED
    assert hosts.repository.breaker.state is State.UP
    package = await proxy.get("/packages/alpha")
    assert (package.status, package.headers["X-Cache"]) == (200, "MISS")
    assert upstream.repo.count("/packages/alpha") == 1
    assert upstream.repo.count(CSV) == 0  # the repository host was never asked for it
    assert hosts.repository.breaker.state is State.UP


async def test_ready_status_page_and_metrics_show_each_breaker(
    make_proxy: ProxyFactory, upstream: Upstream, refused_url: str
) -> None:
    proxy = await make_proxy(
        upstream__builds_url=refused_url,
        upstream__failure_threshold=1,
        upstream__retry_after=600,
    )
    await proxy.get(CSV)
    ready = await (await proxy.get("/_hexproxy/ready")).text()
    assert "upstream repository: up\n" in ready
    assert "upstream builds: paused for" in ready and "cannot connect to upstream" in ready

    html = await (await proxy.get("/_hexproxy/")).text()
    assert '<span>Upstream: repository</span><b class="up">up</b>' in html
    assert '<span>Upstream: builds (/installs)</span><b class="paused">paused</b>' in html

    m = await scrape(proxy)
    state = "hexproxy_upstream_host_state"
    assert sample(m, state, host="repository", state="up") == 1
    assert sample(m, state, host="builds", state="paused") == 1
    assert sample(m, state, host="builds", state="up") == 0
    # The older single-upstream gauge keeps meaning the repository.
    assert sample(m, "hexproxy_upstream_state", state="up") == 1
    assert sample(m, "hexproxy_upstream_state", state="paused") == 0


async def test_a_dead_repository_leaves_the_builds_breaker_closed(
    make_proxy: ProxyFactory, upstream: Upstream, aiohttp_server: Any
) -> None:
    builds = FakeHexRepo({})
    builds_server = await aiohttp_server(builds.app())
    builds_upstream = Upstream(builds, builds_server)
    publish_csv(builds_upstream, "hex.csv", b"2.3.0," + b"a" * 128 + b",1.19.0,27\n", signed=False)
    proxy: TestClient[Any, Any] = await make_proxy(
        upstream__builds_url=builds_upstream.url,
        upstream__failure_threshold=1,
        upstream__retry_after=600,
    )
    await upstream.stop()
    assert (await proxy.get("/packages/alpha")).status == 502
    hosts = proxy.app[CACHE].upstream
    assert hosts.repository.breaker.state is State.PAUSED
    response = await proxy.get("/installs/hex.csv")
    assert (response.status, response.headers["X-Cache"]) == (200, "MISS")
    assert builds.count("/installs/hex.csv") == 1
    assert hosts.builds.breaker.state is State.UP
