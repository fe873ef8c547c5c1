"""Every error the proxy answers names its stable code in X-Hexproxy-Error."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import ProxyFactory, Upstream


async def test_codes_tell_errors_apart(proxy: TestClient[Any, Any], upstream: Upstream) -> None:
    upstream.repo.fail("bad_signature", "/packages/alpha")
    cases = {
        "/packages/Not-A-Name": (400, "invalid_request"),
        "/packages/nosuchpackage": (404, "not_found"),
        "/packages/alpha": (502, "bad_signature"),
    }
    for path, expected in cases.items():
        response = await proxy.get(path)
        assert (response.status, response.headers.get("X-Hexproxy-Error")) == expected, path


async def test_offline_miss_is_not_cached_not_not_found(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(upstream__offline=True)
    response = await proxy.get("/packages/alpha")
    assert response.status == 404
    assert response.headers["X-Hexproxy-Error"] == "not_cached"
    assert "offline cache" in await response.text()


async def test_answers_that_are_not_errors_carry_no_code(proxy: TestClient[Any, Any]) -> None:
    response = await proxy.get("/packages/alpha")
    assert response.status == 200
    assert "X-Hexproxy-Error" not in response.headers
