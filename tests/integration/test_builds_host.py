"""A builds host that cannot be reached (the usual case in a locked-down network) costs
package fetches nothing: it has its own circuit breaker, shown on /ready, the status
page and in the metrics; and ``/installs/*`` misses are answered at once with a 404
(Hex's "no update information"), trying the host at most once per ``negative_ttl``."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hexproxy.registry import public_key_pem
from hexproxy.upstream.breaker import State
from hexproxy.web.state import CACHE
from tests.conftest import ProxyFactory, Upstream
from tests.fakes.hex_repo import FakeHexRepo
from tests.integration.test_installs import publish_builds_host, publish_csv
from tests.integration.test_ops import sample, scrape
from tests.support.keys import other_private_key
from tests.support.user_agents import AS_HEX_2_5, REAL_CLIENTS

CSV = "/installs/hex-1.x.csv"


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback port that refuses connections: bound (so nobody else takes it), never
    listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
async def builds_host(aiohttp_server: Any) -> Upstream:
    """A second fake, serving as the builds host behind /installs/*."""
    builds = FakeHexRepo({})
    return Upstream(builds, await aiohttp_server(builds.app()))


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
        assert response.status == 404
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
    make_proxy: ProxyFactory, upstream: Upstream, builds_host: Upstream
) -> None:
    builds, builds_upstream = builds_host.repo, builds_host
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


# ----- /installs/* with the builds host down: a quick 404, one attempt per negative_ttl -----

Attempts = Callable[[TestClient[Any, Any]], Awaitable[int]]


@pytest.fixture(params=["refused", "503"])
async def dead_builds(
    request: pytest.FixtureRequest, refused_url: str, aiohttp_server: Any
) -> tuple[str, Attempts]:
    """A builds host that gives no answer, and how to count the attempts made on it:
    a refused port (counted by the proxy's own upstream-failure metric, as nothing
    listens there) or a fake that answers 503 to everything (counted at the fake)."""
    if request.param == "refused":

        async def failures(proxy: TestClient[Any, Any]) -> int:
            m = await scrape(proxy)
            return int(sample(m, "hexproxy_upstream_failures_total", error="UpstreamUnavailable"))

        return refused_url, failures
    builds = FakeHexRepo({})
    builds.fail("503")
    server = await aiohttp_server(builds.app())

    async def seen(_: TestClient[Any, Any]) -> int:
        return len(builds.requests)

    return str(server.make_url("")).rstrip("/"), seen


@pytest.fixture
def installs_key(tmp_path: Path) -> Path:
    """The key the fake builds host's CSVs are signed with (see test_installs.py)."""
    path = tmp_path / "installs_key.pem"
    path.write_bytes(public_key_pem(other_private_key().public_key()))
    return path


def drive_clock(proxy: TestClient[Any, Any]) -> list[float]:
    """The cache's clock, frozen; the test moves it by changing ``now[0]``."""
    cache = proxy.app[CACHE]
    now = [cache.clock()]
    cache.clock = lambda: now[0]
    return now


async def update_check(proxy: TestClient[Any, Any], i: int) -> None:
    """One Hex update check, from each real client in turn: a 404 with the reason in the
    body and no x-hex-message for anyone."""
    user_agent = REAL_CLIENTS[i % len(REAL_CLIENTS)][1]
    response = await proxy.get(CSV, headers={"User-Agent": user_agent})
    body = await response.text()
    assert response.status == 404, body
    assert "x-hex-message" not in response.headers
    assert "builds host could not answer" in body


async def test_twenty_update_checks_cost_one_attempt_per_negative_ttl(
    make_proxy: ProxyFactory,
    upstream: Upstream,
    dead_builds: tuple[str, Attempts],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, attempts = dead_builds
    # A breaker that never opens, so the count shows negative_ttl alone at work (with the
    # default threshold the builds breaker pauses too, and attempts only get rarer).
    proxy = await make_proxy(
        upstream__builds_url=url, cache__negative_ttl=60, upstream__failure_threshold=1000
    )
    now = drive_clock(proxy)
    caplog.set_level(logging.INFO)
    # First window: 20 at once (they share one attempt), then 20 more one by one.
    await asyncio.gather(*(update_check(proxy, i) for i in range(20)))
    for i in range(20):
        await update_check(proxy, i)
    assert await attempts(proxy) == 1
    for window in (2, 3, 4):
        now[0] += 59
        await update_check(proxy, 0)
        assert await attempts(proxy) == window - 1  # still remembered
        now[0] += 2  # negative_ttl is over: one new attempt, then remembered again
        for i in range(20):
            await update_check(proxy, i)
        assert await attempts(proxy) == window
    hosts = proxy.app[CACHE].upstream
    assert hosts.repository.breaker.state is State.UP
    assert hosts.repository.breaker.failures == 0
    package = await proxy.get("/packages/alpha")
    assert (package.status, package.headers["X-Cache"]) == (200, "MISS")
    assert upstream.repo.count("/packages/alpha") == 1
    # Why, said once (not per request, not per window); no per-request warning either.
    down = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(down) == 1 and down[0].levelno == logging.WARNING
    assert "answered 404" in down[0].getMessage()
    assert not [r for r in caplog.records if r.name == "hexproxy.web" and CSV in r.getMessage()]


async def test_the_builds_host_coming_back_is_used_again(
    make_proxy: ProxyFactory, builds_host: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    builds, builds_upstream = builds_host.repo, builds_host
    publish_csv(builds_upstream, "hex.csv", b"2.3.0," + b"a" * 128 + b",1.19.0,27\n", signed=False)
    builds.fail("503")
    proxy = await make_proxy(upstream__builds_url=builds_upstream.url, cache__negative_ttl=60)
    now = drive_clock(proxy)
    caplog.set_level(logging.INFO)
    for _ in range(5):
        assert (await proxy.get("/installs/hex.csv")).status == 404
    assert builds.count("/installs/hex.csv") == 1
    builds.heal()
    assert (await proxy.get("/installs/hex.csv")).status == 404  # still remembered
    now[0] += 61
    response = await proxy.get("/installs/hex.csv")
    assert (response.status, response.headers["X-Cache"]) == (200, "MISS")
    assert builds.count("/installs/hex.csv") == 2
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_a_cached_csv_is_served_stale_without_retrying_a_dead_builds_host(
    make_proxy: ProxyFactory, builds_host: Upstream, installs_key: Path
) -> None:
    builds, builds_upstream = builds_host.repo, builds_host
    publish_builds_host(builds_upstream)
    proxy = await make_proxy(
        upstream__builds_url=builds_upstream.url,
        upstream__installs_public_key=str(installs_key),
        cache__registry_ttl=0,
        cache__negative_ttl=60,
    )
    drive_clock(proxy)
    good = await (await proxy.get(CSV)).read()
    builds.fail("503")
    asked = len(builds.requests)
    for _ in range(10):
        response = await proxy.get(CSV, headers=AS_HEX_2_5)
        assert (response.status, response.headers["X-Cache"]) == (200, "STALE")
        assert await response.read() == good
    assert len(builds.requests) == asked + 1
    # A build the CSV names but the cache lacks: the same quick 404, not a 502.
    missing = await proxy.get("/installs/1.14.0/hex-2.0.6.ez", headers=AS_HEX_2_5)
    assert missing.status == 404
    assert "x-hex-message" not in missing.headers
    assert len(builds.requests) == asked + 1


async def test_a_build_whose_fetch_fails_is_a_404_too(
    make_proxy: ProxyFactory, builds_host: Upstream, installs_key: Path
) -> None:
    builds, builds_upstream = builds_host.repo, builds_host
    publish_builds_host(builds_upstream)
    proxy = await make_proxy(
        upstream__builds_url=builds_upstream.url,
        upstream__installs_public_key=str(installs_key),
    )
    assert (await proxy.get(CSV)).status == 200
    builds.fail("503", "/installs/1.14.0/hex-2.0.6.ez")
    for method in (proxy.get, proxy.head):
        response = await method("/installs/1.14.0/hex-2.0.6.ez")
        assert response.status == 404, method
    assert builds.count("/installs/1.14.0/hex-2.0.6.ez") == 1


async def test_offline_installs_miss_is_a_quiet_404_logged_once(
    make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await make_proxy(upstream__offline=True)
    caplog.set_level(logging.INFO)
    for i in range(5):
        user_agent = REAL_CLIENTS[i % len(REAL_CLIENTS)][1]
        response = await proxy.get(CSV, headers={"User-Agent": user_agent})
        assert response.status == 404
        assert "x-hex-message" not in response.headers
        assert "not in this offline cache" in await response.text()
    said = [r for r in caplog.records if "offline" in r.getMessage() and CSV in r.getMessage()]
    assert len(said) == 1


async def test_credentials_in_builds_url_stay_out_of_log_and_status_page(
    make_proxy: ProxyFactory, refused_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with_secret = refused_url.replace("http://", "http://ci:s3cret@")
    proxy = await make_proxy(upstream__builds_url=with_secret)
    caplog.set_level(logging.DEBUG)
    assert (await proxy.get(CSV)).status == 404
    said = [r.getMessage() for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert said and refused_url.removeprefix("http://") in said[0]
    assert not [m for m in (r.getMessage() for r in caplog.records) if "s3cret" in m]
    html = await (await proxy.get("/_hexproxy/")).text()
    assert refused_url.removeprefix("http://") in html and "s3cret" not in html
    assert "s3cret" not in await (await proxy.get("/_hexproxy/ready")).text()
