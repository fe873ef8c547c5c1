"""Paths, headers, conditional requests and single-flight, as clients see them."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hexproxy.web.state import CACHE
from tests.conftest import ProxyFactory, Upstream
from tests.support.cachefiles import object_files
from tests.support.waiting import wait_until


async def test_200_headers_rebar3_and_mix_need(proxy: TestClient[Any, Any]) -> None:
    for path in ("/packages/alpha", "/tarballs/alpha-1.0.0.tar"):
        for _ in range(2):  # miss, then hit
            response = await proxy.get(path)
            body = await response.read()
            assert response.status == 200
            etag = response.headers["ETag"]
            assert etag == f'"{hashlib.sha256(body).hexdigest()}"'  # strong, quoted
            assert int(response.headers["Content-Length"]) == len(body)
            assert response.headers["Content-Type"] == "application/octet-stream"
            assert "Last-Modified" in response.headers
            assert "Cache-Control" in response.headers
            assert "Content-Encoding" not in response.headers


@pytest.mark.parametrize("path", ["/packages/alpha", "/tarballs/alpha-1.0.0.tar"])
async def test_if_none_match(proxy: TestClient[Any, Any], path: str) -> None:
    first = await proxy.get(path)
    etag = first.headers["ETag"]
    cases = {
        etag: 304,
        f"W/{etag}": 304,
        f'"other", {etag}': 304,
        "*": 304,
        '""': 200,  # rebar3 on a cold cache: matches nothing
        '"something-else"': 200,
    }
    for header, expected in cases.items():
        response = await proxy.get(path, headers={"If-None-Match": header})
        assert response.status == expected, header
        if expected == 304:
            assert await response.read() == b""
            assert response.headers["ETag"] == etag


async def test_empty_if_none_match_is_no_condition(proxy: TestClient[Any, Any]) -> None:
    response = await proxy.get("/tarballs/alpha-1.0.0.tar", headers={"If-None-Match": ""})
    assert response.status == 200
    assert len(await response.read()) > 0


@pytest.mark.parametrize("path", ["/packages/alpha", "/tarballs/alpha-1.0.0.tar"])
async def test_head(proxy: TestClient[Any, Any], upstream: Upstream, path: str) -> None:
    for _ in range(2):
        response = await proxy.head(path)
        assert response.status == 200
        assert int(response.headers["Content-Length"]) > 0
        assert "ETag" in response.headers
        assert await response.read() == b""


async def test_public_key_is_the_configured_key(
    proxy: TestClient[Any, Any], public_key_file: Any
) -> None:
    response = await proxy.get("/public_key")
    assert response.status == 200
    assert await response.read() == public_key_file.read_bytes()
    assert response.headers["Content-Type"].startswith("text/plain")


async def test_installs_and_docs_are_proxied(
    proxy: TestClient[Any, Any], upstream: Upstream
) -> None:
    # hex.csv (Elixir 1.19+) may be unsigned; hex-1.x.csv needs its .signed (test_installs.py)
    upstream.repo.publish("installs/hex.csv", b"2.0.6,abc,1.14.0\n")
    upstream.repo.publish("docs/alpha-1.0.0.tar.gz", b"\x1f\x8b docs")
    csv = await proxy.get("/installs/hex.csv")
    assert (csv.status, await csv.read()) == (200, b"2.0.6,abc,1.14.0\n")
    docs = await proxy.get("/docs/alpha-1.0.0.tar.gz")
    assert (docs.status, await docs.read()) == (200, b"\x1f\x8b docs")
    assert (await proxy.get("/installs/hex.csv")).headers["X-Cache"] == "HIT"
    assert (await proxy.get("/docs/alpha-1.0.0.tar.gz")).headers["X-Cache"] == "HIT"


HOSTILE = [
    "/packages/..%2F..%2Fetc%2Fpasswd",
    "/packages/%2e%2e",
    "/packages/Alpha",
    "/packages/a%00b",
    "/packages/a%2Fb",
    "/packages/1abc",
    "/packages/" + "a" * 300,
    "/tarballs/alpha.tar",
    "/tarballs/alpha-1.0.tar",
    "/tarballs/alpha-1.0.0.tar.gz",
    "/tarballs/..%2Falpha-1.0.0.tar",
    "/tarballs/alpha-1.0.0%2F..%2F..%2Fx.tar",
    "/tarballs/alpha-01.0.0.tar",
    "/docs/alpha-1.0.0.tar",
    "/installs/..%2F..%2Fetc%2Fpasswd",
    "/installs/a/b/c/d",
    "/installs/%2e%2e/x",
    "/registry.ets.gz",
    "/etc/passwd",
    "/",
    "/packages",
    "/packages/",
]


@pytest.mark.parametrize("path", HOSTILE)
async def test_hostile_paths_touch_nothing(
    proxy: TestClient[Any, Any], upstream: Upstream, path: str
) -> None:
    response = await proxy.get(path)
    assert response.status in (400, 404), (path, response.status)
    assert upstream.repo.requests == []
    root = proxy.app[CACHE].storage.root
    assert object_files(root) == []


async def test_single_flight_for_tarballs(proxy: TestClient[Any, Any], upstream: Upstream) -> None:
    upstream.repo.delay = 0.2
    expected = upstream.repo.files["tarballs/gamma-0.1.0.tar"]

    async def fetch() -> bytes:
        response = await proxy.get("/tarballs/gamma-0.1.0.tar")
        assert response.status == 200
        return await response.read()

    bodies = await asyncio.gather(*(fetch() for _ in range(50)))
    assert all(body == expected for body in bodies)
    assert upstream.repo.count("/tarballs/gamma-0.1.0.tar") == 1
    assert upstream.repo.count("/packages/gamma") == 1


async def test_single_flight_for_registry_files(
    proxy: TestClient[Any, Any], upstream: Upstream
) -> None:
    upstream.repo.delay = 0.2
    responses = await asyncio.gather(*(proxy.get("/packages/alpha") for _ in range(50)))
    bodies = {await r.read() for r in responses}
    assert bodies == {upstream.repo.files["packages/alpha"]}
    assert upstream.repo.count("/packages/alpha") == 1


async def test_a_client_that_leaves_does_not_stop_the_download(
    proxy: TestClient[Any, Any], upstream: Upstream
) -> None:
    upstream.repo.fail("trickle", "/tarballs/gamma-0.1.0.tar")
    upstream.repo.trickle_delay = 0.0005
    response = await proxy.get("/tarballs/gamma-0.1.0.tar")
    await response.content.readexactly(64)  # the download is under way
    response.close()  # and the client hangs up half-way
    stored = proxy.app[CACHE].storage.root / "tarballs" / "gamma" / "gamma-0.1.0.tar"
    await wait_until(stored.exists, "the download to finish without its client")
    upstream.repo.heal()
    response = await proxy.get("/tarballs/gamma-0.1.0.tar")
    assert await response.read() == upstream.repo.files["tarballs/gamma-0.1.0.tar"]
    assert upstream.repo.count("/tarballs/gamma-0.1.0.tar") == 1


async def test_registry_files_are_byte_identical_to_upstream(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy()
    for path in ("/names", "/versions", "/packages/alpha", "/packages/beta"):
        response = await proxy.get(path)
        assert await response.read() == upstream.repo.files[path.lstrip("/")]
