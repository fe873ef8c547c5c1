"""mix's two organization-key API calls, when HEX_API_URL points at the proxy, are
forwarded to upstream.api_url as they came and answered as the API answered.

Request shapes (../shared/hosting-protocol.md, part B; hex_core's mix_hex_api):
``POST {api}/oauth/token`` with an ETF map {grant_type: client_credentials, client_id,
client_secret: KEY, scope: repositories}, and ``GET {api}/auth?domain=repository&
resource=ORG`` with ``authorization: KEY``; both with ``accept`` and (for the POST)
``content-type`` ``application/vnd.hex+erlang`` and hex_core's User-Agent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import ProxyFactory
from tests.support import etf
from tests.support.orgs import ACME_KEY, GLOBEX_KEY
from tests.support.user_agents import HEX_2_3, HEX_2_5

ETF = "application/vnd.hex+erlang"
HEX_CLIENT_ID = "78ea6566-89fd-481e-a1d6-7d9d78eacca8"
TOKEN = "short.lived.token.for.acme"
TOKEN_ANSWER = etf.encode({"access_token": TOKEN, "expires_in": 3600, "token_type": "bearer"})


@dataclass
class FakeApi:
    """hex.pm's API, for these two calls: what hexpm's OAuth and Auth controllers answer."""

    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/oauth/token", self.token)
        app.router.add_get("/api/auth", self.auth)
        return app

    async def token(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.path_qs, dict(request.headers), body))
        if etf.encode({"client_secret": ACME_KEY})[6:] in body:  # the key, as ETF
            return web.Response(body=TOKEN_ANSWER, content_type=ETF)
        return web.Response(
            status=401,
            body=etf.encode({"error": "invalid_client"}),
            content_type=ETF,
            headers={"x-hex-message": '"invalid key"; level=fatal'},
        )

    async def auth(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.path_qs, dict(request.headers), b""))
        if request.headers.get("Authorization") == ACME_KEY and request.query.get("resource") == (
            "acme"
        ):
            return web.Response(status=204)
        return web.Response(
            status=403, body=etf.encode({"message": "account not authorized"}), content_type=ETF
        )


@pytest.fixture
async def api(aiohttp_server: Any) -> tuple[FakeApi, TestServer]:
    fake = FakeApi()
    return fake, await aiohttp_server(fake.app())


def api_url(server: TestServer) -> str:
    return str(server.make_url("/api"))


def exchange_body(key: str) -> bytes:
    return etf.encode(
        {
            "grant_type": "client_credentials",
            "client_id": HEX_CLIENT_ID,
            "client_secret": key,
            "scope": "repositories",
        }
    )


async def exchange(proxy: TestClient[Any, Any], key: str, user_agent: str = HEX_2_5) -> Any:
    return await proxy.post(
        "/api/oauth/token",
        data=exchange_body(key),
        headers={"Content-Type": ETF, "Accept": ETF, "User-Agent": user_agent},
    )


async def test_oauth_token_exchange_is_forwarded_as_it_came(
    make_proxy: ProxyFactory, api: tuple[FakeApi, TestServer]
) -> None:
    fake, server = api
    proxy = await make_proxy(upstream__api_url=api_url(server))
    response = await exchange(proxy, ACME_KEY)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith(ETF)
    assert response.headers["Cache-Control"] == "no-store"
    assert await response.read() == TOKEN_ANSWER
    [(method, path, headers, body)] = fake.seen
    assert (method, path, body) == ("POST", "/api/oauth/token", exchange_body(ACME_KEY))
    assert headers["Content-Type"] == ETF and headers["Accept"] == ETF
    assert headers["User-Agent"] == HEX_2_5


async def test_refused_exchange_passes_through(
    make_proxy: ProxyFactory, api: tuple[FakeApi, TestServer]
) -> None:
    _, server = api
    proxy = await make_proxy(upstream__api_url=api_url(server))
    response = await exchange(proxy, GLOBEX_KEY + "x")
    assert response.status == 401
    assert await response.read() == etf.encode({"error": "invalid_client"})
    assert response.headers["x-hex-message"] == '"invalid key"; level=fatal'
    old = await exchange(proxy, GLOBEX_KEY + "x", user_agent=HEX_2_3)
    assert old.status == 401 and "x-hex-message" not in old.headers


async def test_auth_check_is_forwarded_with_the_key(
    make_proxy: ProxyFactory, api: tuple[FakeApi, TestServer]
) -> None:
    fake, server = api
    proxy = await make_proxy(upstream__api_url=api_url(server))
    headers = {"Authorization": ACME_KEY, "Accept": ETF, "User-Agent": HEX_2_5}
    ok = await proxy.get("/api/auth?domain=repository&resource=acme", headers=headers)
    assert ok.status == 204
    refused = await proxy.get("/api/auth?domain=repository&resource=globex&x=y", headers=headers)
    assert refused.status == 403
    assert await refused.read() == etf.encode({"message": "account not authorized"})
    paths = [(path, seen.get("Authorization")) for _, path, seen, _ in fake.seen]
    assert paths == [
        ("/api/auth?domain=repository&resource=acme", ACME_KEY),
        ("/api/auth?domain=repository&resource=globex", ACME_KEY),  # only the known params
    ]


async def test_api_down_is_a_502_and_the_api_has_its_own_breaker(
    make_proxy: ProxyFactory, api: tuple[FakeApi, TestServer]
) -> None:
    _, server = api
    proxy = await make_proxy(upstream__api_url=api_url(server))
    await server.close()
    for _ in range(3):
        response = await exchange(proxy, ACME_KEY)
        assert response.status == 502
        assert ACME_KEY.encode() not in await response.read()
    ready = await (await proxy.get("/_hexproxy/ready")).text()
    assert "upstream api: paused" in ready
    assert "upstream repository: up" in ready and "upstream orgs: up" in ready


async def test_offline_answers_without_forwarding(
    make_proxy: ProxyFactory, api: tuple[FakeApi, TestServer]
) -> None:
    fake, server = api
    proxy = await make_proxy(upstream__api_url=api_url(server), upstream__offline=True)
    response = await exchange(proxy, ACME_KEY)
    assert response.status == 502
    assert "offline" in await response.text()
    assert fake.seen == []


async def test_bodies_and_keys_are_not_logged(
    make_proxy: ProxyFactory, api: tuple[FakeApi, TestServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, server = api
    proxy = await make_proxy(upstream__api_url=api_url(server))
    await exchange(proxy, ACME_KEY)
    await proxy.get(
        "/api/auth?domain=repository&resource=acme", headers={"Authorization": GLOBEX_KEY}
    )
    await server.close()
    await exchange(proxy, ACME_KEY)  # a failure, logged
    for secret in (ACME_KEY, GLOBEX_KEY, TOKEN, HEX_CLIENT_ID):
        assert secret not in caplog.text
    metrics = await (await proxy.get("/_hexproxy/metrics")).text()
    assert all(secret not in metrics for secret in (ACME_KEY, GLOBEX_KEY, TOKEN))


async def test_oversized_body_is_refused_before_forwarding(
    make_proxy: ProxyFactory, api: tuple[FakeApi, TestServer]
) -> None:
    fake, server = api
    proxy = await make_proxy(upstream__api_url=api_url(server))
    response = await proxy.post("/api/oauth/token", data=b"x" * (65 * 1024))
    assert response.status == 400
    assert fake.seen == []
