"""Real rebar3 resolving a whole dependency tree through a real hexproxy process.

Upstream is a FakeHexRepo on 127.0.0.1 serving `erlang_tree()` (15 packages, 45
releases, signed with the test key); the proxy is ``python -m hexproxy serve`` on a free
loopback port; rebar3 reaches it through ``HEX_CDN`` with a fresh ``REBAR_CACHE_DIR``
per run (tests/support/rebar3.py). Each scenario is one test and starts from a cold
proxy cache, which a first rebar3 run fills (rebar3 takes about a second per run).

Timings are printed (``pytest -s -m clients``) as ``[rebar3 timing] ...`` lines.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import aiohttp
import pytest

from hexproxy.registry import public_key_pem
from hexproxy.store.storage import FileStorage
from tests.clients.conftest import tree_files
from tests.conftest import Upstream
from tests.fakes.hex_repo import BlackHole
from tests.support.keys import test_private_key
from tests.support.proxy_process import ProxyProcess, ProxyProcesses
from tests.support.rebar3 import Rebar3Project, Rebar3Result, require_rebar3
from tests.support.repo import (
    PackageSpec,
    build_repo,
    erlang_tree,
    erlang_tree_roots,
    expected_lock,
)
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from pathlib import Path


pytestmark = pytest.mark.clients

# A release of the tree rebar3 would pick over acorn 1.2.0 ("~> 1.1"), same deps.
NEW_ACORN = "1.2.1"
# A package added upstream after the proxy cache was filled; nothing else depends on it.
NEW_PACKAGE = "quince"


def tree_with(*extra: PackageSpec) -> dict[str, bytes]:
    """The tree's repository with more releases, re-signed: what upstream looks like later."""
    return build_repo([*erlang_tree(), *extra], test_private_key())


def report(label: str, seconds: float) -> None:
    print(f"\n[rebar3 timing] {label}: {seconds:.2f}s")


async def past_the_ttl(cache: Path, ttl: float) -> None:
    """Wait until every registry file the proxy holds is older than ``ttl``, by the
    validation times it recorded with them, so its next request for one revalidates."""
    storage = FileStorage(cache)
    metas = [storage.read_meta(key) for key in storage.iter_keys() if key.is_mutable]
    newest = max(meta.validated_at for meta in metas if meta is not None)
    await wait_until(lambda: time.time() > newest + ttl, "the registry TTL to pass")


@pytest.fixture(autouse=True)
def _rebar3() -> None:
    require_rebar3()


# ---------------------------------------------------------------------------
# Helpers


def new_project(
    root: Path, proxy: ProxyProcess, deps: list[tuple[str, str]] | None = None
) -> Rebar3Project:
    """A fresh project with its own empty rebar3 cache, pointed at ``proxy``."""
    return Rebar3Project(
        root,
        cdn_url=proxy.url,
        public_key_pem=public_key_pem(test_private_key().public_key()),
        deps=erlang_tree_roots() if deps is None else deps,
    )


def explain(result: Rebar3Result, proxy: ProxyProcess) -> str:
    return f"{result}\n{proxy.log_tail()}"


async def fetch_and_compile(root: Path, proxy: ProxyProcess) -> tuple[Rebar3Project, float]:
    """`rebar3 get-deps` + `rebar3 compile` of the tree's roots in a fresh project."""
    project = new_project(root, proxy)
    fetched = await project.get_deps()
    assert fetched.ok, explain(fetched, proxy)
    compiled = await project.compile()
    assert compiled.ok, explain(compiled, proxy)
    assert project.lock() == expected_lock()
    return project, fetched.elapsed + compiled.elapsed


async def proxy_get(proxy: ProxyProcess, path: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.get(proxy.url + path) as response,
    ):
        return response.status, await response.read()


async def stop_cleanly(proxies: ProxyProcesses) -> None:
    """SIGTERM every proxy of the test; each must exit 0 within the stop timeout."""
    codes = await proxies.stop_all()
    logs = "\n".join(proxy.log_tail(20) for proxy in proxies.started)
    assert codes == [0] * len(codes), f"exit statuses {codes}\n{logs}"


def tarball_paths() -> list[str]:
    return [f"/tarballs/{name}-{version}.tar" for name, version in expected_lock().items()]


# ---------------------------------------------------------------------------
# Scenarios


async def test_cold_fetches_every_tarball_from_upstream_once(
    tmp_path: Path, tree_upstream: Upstream, proxies: ProxyProcesses
) -> None:
    proxy = await proxies.start(tree_upstream.url, tmp_path / "cache")
    _, cold = await fetch_and_compile(tmp_path / "cold", proxy)
    report("cold (get-deps + compile, empty proxy cache)", cold)

    counts = tree_upstream.repo.counts()
    assert {path: counts[path] for path in tarball_paths()} == dict.fromkeys(tarball_paths(), 1)
    fetched_tarballs = {path for path in counts if path.startswith("/tarballs/")}
    assert fetched_tarballs == set(tarball_paths()), "the proxy fetched tarballs nobody asked for"
    # Resolution needed each locked package's registry file, once, and nothing else.
    packages = {path: n for path, n in counts.items() if path.startswith("/packages/")}
    assert packages == {f"/packages/{name}": 1 for name in expected_lock()}

    # A second client: every tarball is a proxy hit now, upstream sees nothing new.
    await fetch_and_compile(tmp_path / "second", proxy)
    assert tree_upstream.repo.counts() == counts
    await stop_cleanly(proxies)


async def test_warm_with_upstream_gone(
    tmp_path: Path, tree_upstream: Upstream, proxies: ProxyProcesses
) -> None:
    cache = tmp_path / "cache"
    # TTL 0: every /packages request really tries upstream, so the test proves the
    # proxy copes with upstream being gone rather than never asking it.
    proxy = await proxies.start(tree_upstream.url, cache, CACHE_REGISTRY_TTL=0)
    await fetch_and_compile(tmp_path / "fill", proxy)
    _, warm = await fetch_and_compile(tmp_path / "warm", proxy)
    report("warm (fresh rebar3 cache, upstream up)", warm)

    await tree_upstream.stop()
    _, gone = await fetch_and_compile(tmp_path / "gone", proxy)
    report("warm, upstream gone (connection refused)", gone)
    await stop_cleanly(proxies)


async def test_warm_with_upstream_black_holed(
    tmp_path: Path, tree_upstream: Upstream, proxies: ProxyProcesses
) -> None:
    cache = tmp_path / "cache"
    filler = await proxies.start(tree_upstream.url, cache, CACHE_REGISTRY_TTL=0)
    await fetch_and_compile(tmp_path / "fill", filler)
    # The baseline: the same proxy settings, a healthy upstream, a warm proxy cache.
    _, warm = await fetch_and_compile(tmp_path / "warm", filler)
    await filler.stop()

    hole = BlackHole()
    port = await hole.start()
    try:
        proxy = await proxies.start(f"http://127.0.0.1:{port}", cache, CACHE_REGISTRY_TTL=0)
        started = time.monotonic()
        _, holed = await fetch_and_compile(tmp_path / "holed", proxy)
        wall = time.monotonic() - started
        _, ready = await proxy_get(proxy, "/_hexproxy/ready")
    finally:
        # Stopped while requests to the hole are still pending: shutdown must not wait
        # for them (the statuses are checked below, after the hole is gone too).
        codes = await proxies.stop_all()
        await hole.close()
    report("warm (same settings, upstream up)", warm)
    report(f"warm, upstream black-holed (+{holed - warm:.2f}s, {wall:.2f}s in all)", holed)
    # Stale answers after stale_timeout (1 s) until the breaker opens after
    # failure_threshold (3) silences: a few waits in all, not one per package. Each
    # revalidation that went out is one connection to the hole, so count those.
    assert b"upstream repository: paused" in ready, ready  # the circuit is open
    assert hole.accepted < len(expected_lock()), "the proxy asked upstream for every package"
    assert codes == [0, 0], codes


async def test_tampered_tarball_is_refused_and_not_cached(
    tmp_path: Path, tree_upstream: Upstream, proxies: ProxyProcesses
) -> None:
    cache = tmp_path / "cache"
    proxy = await proxies.start(tree_upstream.url, cache)
    await fetch_and_compile(tmp_path / "fill", proxy)
    before = tree_upstream.repo.counts()

    later = tree_with(PackageSpec(NEW_PACKAGE, "1.0.0"))
    tarball = f"/tarballs/{NEW_PACKAGE}-1.0.0.tar"
    for path in (f"packages/{NEW_PACKAGE}", tarball, "names", "versions"):
        tree_upstream.repo.publish(path, later[path.lstrip("/")])
    tree_upstream.repo.fail("flip", tarball)

    project = new_project(tmp_path / "tampered", proxy, deps=[(NEW_PACKAGE, "~> 1.0")])
    result = await project.get_deps()
    assert not result.ok, explain(result, proxy)
    assert f"Failed to fetch and copy dep: {NEW_PACKAGE}-1.0.0" in result.stdout, result
    print(f"\n[rebar3 on the tampered tarball] {result.stdout.strip().splitlines()[-1]}")
    assert tree_upstream.repo.count(tarball) >= 1
    assert list(cache.rglob(f"{NEW_PACKAGE}-1.0.0.tar*")) == []
    assert list((cache / "tmp").iterdir()) == []  # no half-written download left

    # What the proxy had already verified still serves, without touching upstream.
    await fetch_and_compile(tmp_path / "after", proxy)
    after = tree_upstream.repo.counts()
    assert {p: after[p] for p in tarball_paths()} == {p: before[p] for p in tarball_paths()}
    await stop_cleanly(proxies)


async def test_tampered_registry_refresh_keeps_the_verified_copy(
    tmp_path: Path, tree_upstream: Upstream, proxies: ProxyProcesses
) -> None:
    proxy = await proxies.start(tree_upstream.url, tmp_path / "cache", CACHE_REGISTRY_TTL=1)
    await fetch_and_compile(tmp_path / "fill", proxy)
    for name in expected_lock():
        tree_upstream.repo.fail("bad_signature", f"/packages/{name}")
    await past_the_ttl(tmp_path / "cache", 1)  # the next request revalidates upstream
    refreshes_before = sum(tree_upstream.repo.count(f"/packages/{n}") for n in expected_lock())

    _, elapsed = await fetch_and_compile(tmp_path / "after", proxy)
    report("tampered registry refresh (get-deps + compile)", elapsed)
    refreshes = sum(tree_upstream.repo.count(f"/packages/{n}") for n in expected_lock())
    assert refreshes > refreshes_before, "the proxy never tried to refresh"
    # rebar3 verifies signatures itself, so its success already shows it got the old
    # file; check the bytes as well.
    status, body = await proxy_get(proxy, "/packages/acorn")
    assert (status, body) == (200, tree_files()["packages/acorn"])
    await stop_cleanly(proxies)


async def test_new_release_upstream_becomes_visible_after_the_ttl(
    tmp_path: Path, tree_upstream: Upstream, proxies: ProxyProcesses
) -> None:
    proxy = await proxies.start(tree_upstream.url, tmp_path / "cache", CACHE_REGISTRY_TTL=1)
    project, _ = await fetch_and_compile(tmp_path / "project", proxy)

    acorn = next(s for s in erlang_tree() if (s.name, s.version) == ("acorn", "1.2.0"))
    later = tree_with(PackageSpec("acorn", NEW_ACORN, list(acorn.deps)))
    tarball = f"/tarballs/acorn-{NEW_ACORN}.tar"
    for path in ("packages/acorn", tarball, "names", "versions"):
        tree_upstream.repo.publish(path, later[path.lstrip("/")])
    await past_the_ttl(tmp_path / "cache", 1)

    updated = await project.update()
    assert updated.ok, explain(updated, proxy)
    upgraded = await project.run("upgrade", "acorn")
    assert upgraded.ok, explain(upgraded, proxy)
    compiled = await project.compile()
    assert compiled.ok, explain(compiled, proxy)
    assert project.lock() == {**expected_lock(), "acorn": NEW_ACORN}
    assert tree_upstream.repo.count(tarball) == 1
    await stop_cleanly(proxies)
