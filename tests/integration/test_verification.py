"""Nothing that fails verification is stored or served as complete."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from hexproxy.web.state import CACHE
from tests.conftest import ProxyFactory, Upstream
from tests.fakes.hex_repo import flip_byte
from tests.support.cachefiles import object_files
from tests.support.clock import later, past_backoff
from tests.support.keys import other_private_key
from tests.support.repo import PackageSpec, build_repo
from tests.support.user_agents import AS_HEX_2_5


def cached_files(client: TestClient[Any, Any]) -> list[str]:
    root = client.app[CACHE].storage.root
    return [p.relative_to(root).as_posix() for p in object_files(root)]


@pytest.mark.parametrize(
    ("fault", "path"),
    [
        ("bad_signature", "/packages/alpha"),
        ("flip", "/packages/alpha"),
        ("truncate", "/packages/alpha"),
    ],
)
async def test_bad_registry_file_is_refused(
    proxy: TestClient[Any, Any], upstream: Upstream, fault: str, path: str
) -> None:
    upstream.repo.fail(fault, path)
    response = await proxy.get(path, headers=AS_HEX_2_5)
    assert response.status == 502
    assert "x-hex-message" in response.headers
    assert response.headers["x-hex-message"].startswith('"')
    assert cached_files(proxy) == []


async def test_registry_signed_by_another_key_is_refused(
    proxy: TestClient[Any, Any], upstream: Upstream
) -> None:
    forged = build_repo([PackageSpec("alpha", "9.9.9")], other_private_key())
    upstream.repo.publish("packages/alpha", forged["packages/alpha"])
    response = await proxy.get("/packages/alpha")
    assert response.status == 502
    assert "signature" in (await response.text()).lower()
    assert cached_files(proxy) == []


async def test_package_file_of_another_package_is_refused(
    proxy: TestClient[Any, Any], upstream: Upstream
) -> None:
    upstream.repo.swaps["/packages/alpha"] = "/packages/beta"
    response = await proxy.get("/packages/alpha")
    assert response.status == 502
    assert "beta" in await response.text()
    assert cached_files(proxy) == []


async def test_registry_of_another_repository_is_refused(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(upstream__repo_name="myorg")
    response = await proxy.get("/packages/alpha")
    assert response.status == 502
    assert "hexpm" in await response.text()


async def test_tampered_tarball_aborts_the_client_and_is_not_cached(
    proxy: TestClient[Any, Any], upstream: Upstream
) -> None:
    upstream.repo.fail("flip", "/tarballs/gamma-0.1.0.tar")
    response = await proxy.get("/tarballs/gamma-0.1.0.tar")
    assert response.status == 200  # headers left before the last byte could be checked
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert not any(p.startswith("tarballs/") for p in cached_files(proxy))
    assert not any(p.startswith("tmp/") for p in cached_files(proxy))
    # A later, honest answer is stored normally (once the tarball's backoff is over).
    upstream.repo.heal()
    await past_backoff(proxy.app[CACHE])
    good = await proxy.get("/tarballs/gamma-0.1.0.tar")
    assert await good.read() == upstream.repo.files["tarballs/gamma-0.1.0.tar"]
    assert "tarballs/gamma/gamma-0.1.0.tar" in cached_files(proxy)


async def test_truncated_tarball_is_not_cached(
    proxy: TestClient[Any, Any], upstream: Upstream
) -> None:
    upstream.repo.fail("truncate", "/tarballs/gamma-0.1.0.tar")
    response = await proxy.get("/tarballs/gamma-0.1.0.tar")
    if response.status == 200:
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    else:
        assert response.status == 502
    assert not any(p.startswith("tarballs/") for p in cached_files(proxy))


async def test_tarball_not_listed_in_the_signed_registry_is_404(
    proxy: TestClient[Any, Any], upstream: Upstream
) -> None:
    upstream.repo.publish("tarballs/alpha-7.0.0.tar", b"not a real release")
    response = await proxy.get("/tarballs/alpha-7.0.0.tar")
    assert response.status == 404
    assert upstream.repo.count("/tarballs/alpha-7.0.0.tar") == 0


async def test_new_release_found_by_refreshing_the_package_once(
    proxy: TestClient[Any, Any], upstream: Upstream
) -> None:
    assert (await proxy.get("/packages/beta")).status == 200
    newer = build_repo([PackageSpec("beta", v) for v in ("2.0.0", "2.1.0", "2.2.0")], _key())
    upstream.repo.publish("packages/beta", newer["packages/beta"])
    upstream.repo.publish("tarballs/beta-2.2.0.tar", newer["tarballs/beta-2.2.0.tar"])
    # The package file is looked at again for an unknown release only once it is older
    # than negative_ttl (see test_unknown_releases.py).
    later(proxy.app[CACHE], proxy.app[CACHE].config.cache.negative_ttl)
    response = await proxy.get("/tarballs/beta-2.2.0.tar")
    assert response.status == 200
    assert await response.read() == newer["tarballs/beta-2.2.0.tar"]
    assert upstream.repo.count("/packages/beta") == 2


def _key() -> Any:
    from tests.support.keys import test_private_key

    return test_private_key()


def test_flip_byte_changes_exactly_one_byte() -> None:
    data = bytes(range(10))
    flipped = flip_byte(data)
    assert sum(a != b for a, b in zip(data, flipped, strict=True)) == 1
