"""Real mix (Hex) resolving the test tree through a real hexproxy process.

The mix counterpart of test_rebar3_proxy.py: ``HEX_MIRROR`` points at the proxy, each
run has a fresh ``HEX_HOME`` trusting the test key (``mix hex.repo set hexpm
--public-key``). Skipped, with the reason, unless mix and the Hex archive are installed.
Hex leaves optional dependencies out, so the lock is ``expected_lock(with_optional=False)``.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest

from tests.conftest import Upstream
from tests.support.mix import MixProject, require_mix
from tests.support.proxy_process import ProxyProcess, ProxyProcesses
from tests.support.repo import erlang_tree_roots, expected_lock

if TYPE_CHECKING:
    from pathlib import Path


pytestmark = pytest.mark.clients


@pytest.fixture(autouse=True)
def _mix() -> None:
    require_mix()


async def fetch_and_compile(
    root: Path, proxy: ProxyProcess, public_key_file: Path
) -> tuple[MixProject, float]:
    """`mix deps.get` + `mix compile` of the tree's roots, fresh project and HEX_HOME."""
    project = MixProject(
        root, mirror_url=proxy.url, public_key_file=public_key_file, deps=erlang_tree_roots()
    )
    trusted = await project.trust_key()
    assert trusted.ok, trusted
    fetched = await project.deps_get()
    assert fetched.ok, f"{fetched}\n{proxy.log_tail()}"
    compiled = await project.compile()
    assert compiled.ok, f"{compiled}\n{proxy.log_tail()}"
    assert project.lock() == expected_lock(with_optional=False)
    return project, fetched.elapsed + compiled.elapsed


async def test_mix_cold_fetches_every_tarball_from_upstream_once(
    tmp_path: Path, tree_upstream: Upstream, proxies: ProxyProcesses, public_key_file: Path
) -> None:
    proxy = await proxies.start(
        tree_upstream.url, tmp_path / "cache", UPSTREAM_BUILDS_URL=tree_upstream.url
    )
    _, cold = await fetch_and_compile(tmp_path / "cold", proxy, public_key_file)
    print(f"\n[mix timing] cold: {cold:.2f}s")
    lock = expected_lock(with_optional=False)
    counts = tree_upstream.repo.counts()
    tarballs = {p: n for p, n in counts.items() if p.startswith("/tarballs/")}
    assert tarballs == {f"/tarballs/{n}-{v}.tar": 1 for n, v in lock.items()}
    assert await proxies.stop_all() == [0]


async def test_mix_warm_with_upstream_gone(
    tmp_path: Path, tree_upstream: Upstream, proxies: ProxyProcesses, public_key_file: Path
) -> None:
    proxy = await proxies.start(
        tree_upstream.url,
        tmp_path / "cache",
        CACHE_REGISTRY_TTL=0,
        UPSTREAM_BUILDS_URL=tree_upstream.url,  # the Hex update check, /installs/
    )
    await fetch_and_compile(tmp_path / "fill", proxy, public_key_file)
    await tree_upstream.stop()
    # mix re-fetches every /packages/NAME on each deps.get (it never sends If-None-Match),
    # and a fresh HEX_HOME has no tarballs: everything comes from the proxy's cache.
    _, gone = await fetch_and_compile(tmp_path / "gone", proxy, public_key_file)
    print(f"\n[mix timing] warm, upstream gone: {gone:.2f}s")
    assert await proxies.stop_all() == [0]


async def test_mix_with_the_builds_host_refused(
    tmp_path: Path, tree_upstream: Upstream, proxies: ProxyProcesses, public_key_file: Path
) -> None:
    """A locked-down network: the builds host (Hex's update check, /installs/) is never
    reachable. Whatever Hex is installed, deps.get must not notice beyond one warning."""
    with socket.socket() as refused:  # bound, never listening: connections are refused
        refused.bind(("127.0.0.1", 0))
        builds_url = f"http://127.0.0.1:{refused.getsockname()[1]}"
        proxy = await proxies.start(
            tree_upstream.url, tmp_path / "cache", UPSTREAM_BUILDS_URL=builds_url
        )
        await fetch_and_compile(tmp_path / "locked-down", proxy, public_key_file)
        await fetch_and_compile(tmp_path / "again", proxy, public_key_file)
    assert await proxies.stop_all() == [0]
    log = proxy.log_tail(lines=100_000)
    assert log.count("cannot be reached") <= 1, log
    assert "paused" not in log, log  # the repository's breaker never opened
