"""The core behaviours, through a real proxy in front of a real (fake) upstream."""

from __future__ import annotations

import gzip
import hashlib
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import Upstream


async def test_package_passes_through_byte_identical(
    proxy: TestClient[Any, Any], upstream: Upstream
) -> None:
    response = await proxy.get("/packages/alpha")
    body = await response.read()
    assert response.status == 200
    assert body == upstream.repo.files["packages/alpha"]
    assert "Content-Encoding" not in response.headers
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["X-Cache"] == "MISS"
    assert response.headers["ETag"] == f'"{hashlib.sha256(body).hexdigest()}"'
    assert gzip.decompress(body)  # still the gzip bytes upstream sent

    again = await proxy.get("/packages/alpha")
    assert again.headers["X-Cache"] == "HIT"
    assert await again.read() == body
    assert upstream.repo.count("/packages/alpha") == 1


async def test_tarball_miss_then_hit(proxy: TestClient[Any, Any], upstream: Upstream) -> None:
    expected = upstream.repo.files["tarballs/gamma-0.1.0.tar"]
    response = await proxy.get("/tarballs/gamma-0.1.0.tar")
    assert response.status == 200
    assert await response.read() == expected
    assert response.headers["X-Cache"] == "MISS"
    assert response.headers["ETag"] == f'"{hashlib.sha256(expected).hexdigest()}"'
    hit = await proxy.get("/tarballs/gamma-0.1.0.tar")
    assert hit.headers["X-Cache"] == "HIT"
    assert await hit.read() == expected
    assert hit.headers["ETag"] == response.headers["ETag"]
    assert int(hit.headers["Content-Length"]) == len(expected)
    assert upstream.repo.count("/tarballs/gamma-0.1.0.tar") == 1
