"""Two proxies sharing one S3 bucket (a real SeaweedFS), each with its own cache directory.

What one replica fetched and verified, the other serves without upstream; what comes
from the bucket is verified again on the way in; a bucket that cannot be reached costs
nothing but the sharing.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from hexproxy.config import StoreConfig
from hexproxy.errors import ObjectMissing
from hexproxy.store.cachekey import package_key, tarball_key
from hexproxy.store.s3 import S3Store
from hexproxy.store.storage import Meta
from hexproxy.web.state import CACHE
from tests.conftest import ProxyFactory, Upstream, small_tree
from tests.fakes.hex_repo import BlackHole, corrupt_signature, flip_byte
from tests.support.keys import test_private_key
from tests.support.repo import PackageSpec, build_repo

TARBALL = "/tarballs/alpha-1.0.0.tar"


def settings(store: StoreConfig, cache_dir: Path, **more: Any) -> dict[str, Any]:
    return {
        "cache__dir": str(cache_dir),
        "store__kind": "s3",
        "store__bucket": store.bucket,
        "store__prefix": store.prefix,
        "store__endpoint_url": store.endpoint_url,
        "store__region": store.region,
        "store__timeout": store.timeout,
        **more,
    }


async def drain(proxy: TestClient[Any, Any]) -> None:
    shared = proxy.app[CACHE].shared
    assert shared is not None
    await shared.drain()


async def fetch(proxy: TestClient[Any, Any], path: str) -> tuple[int, bytes, str]:
    response = await proxy.get(path)
    return response.status, await response.read(), response.headers.get("X-Cache", "")


async def test_what_one_replica_fetched_the_other_serves_with_upstream_refused(
    make_proxy: ProxyFactory, upstream: Upstream, tmp_path: Path, s3_store_config: StoreConfig
) -> None:
    a = await make_proxy(**settings(s3_store_config, tmp_path / "a"))
    b = await make_proxy(**settings(s3_store_config, tmp_path / "b"))
    status, tarball, _ = await fetch(a, TARBALL)
    assert status == 200
    _, package, _ = await fetch(a, "/packages/alpha")
    await drain(a)
    await upstream.stop()  # refused from now on

    assert await fetch(b, "/packages/alpha") == (200, package, "HIT")
    status, body, _ = await fetch(b, TARBALL)
    assert (status, body) == (200, tarball)
    # B keeps both on its own disk: the next hit is a local one (sendfile).
    assert (tmp_path / "b" / "tarballs" / "alpha" / "alpha-1.0.0.tar").read_bytes() == tarball
    assert (await b.get(TARBALL)).headers["X-Cache"] == "HIT"


async def test_both_replicas_asking_at_once_fetch_once_each_at_most_and_store_one_copy(
    make_proxy: ProxyFactory, upstream: Upstream, tmp_path: Path, s3_store_config: StoreConfig
) -> None:
    a = await make_proxy(**settings(s3_store_config, tmp_path / "a"))
    b = await make_proxy(**settings(s3_store_config, tmp_path / "b"))
    answers = await asyncio.gather(*(fetch(p, TARBALL) for p in (a, b, a, b)))
    bodies = {body for status, body, _ in answers if status == 200}
    assert len(bodies) == 1 and len(answers) == 4
    await drain(a)
    await drain(b)
    assert upstream.repo.count(TARBALL) <= 2  # at most one per replica
    store = S3Store(s3_store_config)
    try:
        blob = await store.get(tarball_key("alpha", "1.0.0"))
        assert blob.body in bodies
        assert [
            str(item.key) async for item in store.list() if item.key.kind.value == "tarball"
        ] == [TARBALL]
    finally:
        await store.close()


async def test_a_tampered_tarball_in_the_bucket_is_never_served_and_gets_replaced(
    make_proxy: ProxyFactory, upstream: Upstream, tmp_path: Path, s3_store_config: StoreConfig
) -> None:
    good = upstream.repo.files[TARBALL.lstrip("/")]
    bad = flip_byte(good)
    store = S3Store(s3_store_config)
    key = tarball_key("alpha", "1.0.0")
    try:
        digest = hashlib.sha256(bad).hexdigest()
        await store.put(key, bad, Meta(digest, len(bad), 1.0, 1.0))
        b = await make_proxy(**settings(s3_store_config, tmp_path / "b"))
        assert await fetch(b, TARBALL) == (200, good, "MISS")
        assert upstream.repo.count(TARBALL) == 1
        assert b.app[CACHE].counters.verification_failures == 1
        await drain(b)
        assert (await store.get(key)).body == good  # the verified copy replaced it
    finally:
        await store.close()


async def test_a_registry_file_with_a_bad_signature_in_the_bucket_is_ignored(
    make_proxy: ProxyFactory, upstream: Upstream, tmp_path: Path, s3_store_config: StoreConfig
) -> None:
    good = upstream.repo.files["packages/alpha"]
    store = S3Store(s3_store_config)
    try:
        bad = corrupt_signature(good)
        await store.put(
            package_key("alpha"), bad, Meta(hashlib.sha256(bad).hexdigest(), len(bad), 9e9, 9e9)
        )
        b = await make_proxy(**settings(s3_store_config, tmp_path / "b"))
        status, body, _ = await fetch(b, "/packages/alpha")
        assert (status, body) == (200, good)
        assert upstream.repo.count("/packages/alpha") == 1
        await drain(b)
        assert (await store.get(package_key("alpha"))).body == good
    finally:
        await store.close()


async def test_a_newer_registry_file_in_the_bucket_never_loses_to_an_older_one(
    make_proxy: ProxyFactory, upstream: Upstream, tmp_path: Path, s3_store_config: StoreConfig
) -> None:
    a = await make_proxy(**settings(s3_store_config, tmp_path / "a"))
    b = await make_proxy(**settings(s3_store_config, tmp_path / "b"))
    _, old, _ = await fetch(a, "/packages/beta")
    await drain(a)
    # beta 2.2.0 is published; B (cold) fetches the new signed file and shares it.
    newer = build_repo([*small_tree(), PackageSpec("beta", "2.2.0")], test_private_key())
    upstream.repo.publish("packages/beta", newer["packages/beta"])
    await b.app[CACHE].shared.store.delete(package_key("beta"))  # type: ignore[union-attr]
    _, new, _ = await fetch(b, "/packages/beta")
    assert new == newer["packages/beta"] != old
    await drain(b)
    # Now A's older copy is published again, late (a slow upload, a restart): it loses.
    entry = a.app[CACHE].memory_entry(package_key("beta"))
    assert entry is not None and entry.body == old
    a.app[CACHE].shared.publish(entry.key, entry.body, entry.meta)  # type: ignore[union-attr]
    await drain(a)
    store = S3Store(s3_store_config)
    try:
        assert (await store.get(package_key("beta"))).body == new
    finally:
        await store.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_store_costs_only_the_sharing(
    make_proxy: ProxyFactory, upstream: Upstream, tmp_path: Path, s3_store_config: StoreConfig
) -> None:
    down = StoreConfig(
        kind="s3",
        bucket=s3_store_config.bucket,
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        region="us-east-1",
        timeout=1.0,
    )
    a = await make_proxy(**settings(down, tmp_path / "a"))
    status, _, result = await fetch(a, TARBALL)
    assert (status, result) == (200, "MISS")
    assert (await fetch(a, "/packages/alpha"))[0] == 200
    await drain(a)
    assert (await fetch(a, TARBALL))[2] == "HIT"
    ready = await a.get("/_hexproxy/ready")
    text = await ready.text()
    assert ready.status == 200, text
    assert "store: UNREACHABLE" in text
    metrics = await (await a.get("/_hexproxy/metrics")).text()
    assert 'hexproxy_store_errors_total{op="get"}' in metrics


async def test_ready_says_the_store_is_reachable(
    make_proxy: ProxyFactory, tmp_path: Path, s3_store_config: StoreConfig
) -> None:
    a = await make_proxy(**settings(s3_store_config, tmp_path / "a"))
    expected = f"store: reachable (s3://{s3_store_config.bucket}/{s3_store_config.prefix}"
    # Readiness gives the store 0.8 s; on a loaded machine one probe may find it slow.
    for _ in range(20):
        ready = await a.get("/_hexproxy/ready")
        text = await ready.text()
        assert ready.status == 200
        if expected in text:
            break
    assert expected in text


async def test_a_missing_object_is_missing_not_an_error(
    make_proxy: ProxyFactory, tmp_path: Path, s3_store_config: StoreConfig
) -> None:
    a = await make_proxy(**settings(s3_store_config, tmp_path / "a"))
    assert (await fetch(a, TARBALL))[0] == 200
    shared = a.app[CACHE].shared
    assert shared is not None
    assert shared.requests[("get", "missing")] >= 1
    assert shared.requests[("get", "error")] == 0
    store = S3Store(s3_store_config)
    try:
        await drain(a)
        await store.head(tarball_key("alpha", "1.0.0"))
        try:
            await store.head(tarball_key("alpha", "1.1.0"))
        except ObjectMissing:
            pass
        else:
            raise AssertionError("alpha 1.1.0 was never fetched")
    finally:
        await store.close()


async def test_a_black_holed_store_never_holds_a_client_long(
    make_proxy: ProxyFactory, upstream: Upstream, tmp_path: Path, s3_store_config: StoreConfig
) -> None:
    hole = BlackHole()
    port = await hole.start()
    try:
        silent = StoreConfig(
            kind="s3",
            bucket=s3_store_config.bucket,
            endpoint_url=f"http://127.0.0.1:{port}",
            region="us-east-1",
            timeout=1.0,
        )
        a = await make_proxy(**settings(silent, tmp_path / "a", store__timeout=1.0))
        paths = ["/packages/alpha", TARBALL, "/packages/beta", "/tarballs/beta-2.0.0.tar"]
        async with asyncio.timeout(30):  # a hang guard, not a timing
            for path in paths:
                status, body, _ = await fetch(a, path)
                assert (status, body) == (200, upstream.repo.files[path.lstrip("/")])
            ready = await a.get("/_hexproxy/ready")
            assert ready.status == 200
            assert "store: UNREACHABLE" in await ready.text()
        shared = a.app[CACHE].shared
        assert shared is not None
        # After three failures the store is left alone: later lookups skip it.
        assert shared.state == "paused"
        assert shared.requests[("get", "skipped")] >= 1
    finally:
        await hole.close()
