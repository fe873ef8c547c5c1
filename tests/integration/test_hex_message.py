"""Every error hexproxy makes, asked for by each real client: ``x-hex-message`` reaches
only Hex 2.0.x and Hex >= 2.5 (Hex 2.1 to 2.4 crash on it), and every client gets the
same text in the plain-text body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ProxyFactory, Upstream
from tests.support.user_agents import REAL_CLIENTS


@dataclass
class Answer:
    client: str
    prints: bool
    status: int
    header: str | None
    body: str


async def ask_as_each_client(proxy: TestClient[Any, Any], path: str) -> list[Answer]:
    answers = []
    for client, user_agent, prints in REAL_CLIENTS:
        response = await proxy.get(path, headers={"User-Agent": user_agent})
        answers.append(
            Answer(
                client,
                prints,
                response.status,
                response.headers.get("x-hex-message"),
                (await response.read()).decode("utf-8", "replace"),
            )
        )
    return answers


def assert_message_only_where_printed(answers: list[Answer], status: int) -> None:
    for a in answers:
        assert a.status == status, a
        assert a.body.strip(), a  # the reason is always in the body
        if not a.prints:
            assert a.header is None, a
            continue
        assert a.header is not None, a
        assert a.header.startswith('"') and a.header.endswith('"; level=fatal'), a
        # The header repeats the body's text (quotes made safe for Hex's parser).
        assert a.header[1 : -len('"; level=fatal')] == a.body.strip().replace('"', "'"), a


async def test_upstream_refused_miss(proxy: TestClient[Any, Any], upstream: Upstream) -> None:
    await upstream.stop()
    answers = await ask_as_each_client(proxy, "/packages/alpha")
    assert_message_only_where_printed(answers, 502)
    # Failures of other objects open the circuit (alpha itself now backs off); then the
    # breaker answers "paused", and the same rule holds.
    for name in ("beta", "gamma"):
        assert (await proxy.get(f"/packages/{name}")).status == 502
    paused = await ask_as_each_client(proxy, "/packages/oak")
    assert_message_only_where_printed(paused, 502)
    assert all("paused" in a.body for a in paused)


async def test_offline_miss(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(upstream__offline=True)
    answers = await ask_as_each_client(proxy, "/packages/alpha")
    assert_message_only_where_printed(answers, 404)
    assert "offline cache" in answers[0].body


@pytest.mark.parametrize("fault", ["bad_signature", "flip"])
async def test_verification_failure(
    make_proxy: ProxyFactory, upstream: Upstream, fault: str
) -> None:
    proxy = await make_proxy(upstream__failure_threshold=100)
    upstream.repo.fail(fault, "/packages/alpha")
    answers = await ask_as_each_client(proxy, "/packages/alpha")
    assert_message_only_where_printed(answers, 502)


async def test_upstream_5xx(make_proxy: ProxyFactory, upstream: Upstream) -> None:
    proxy = await make_proxy(upstream__failure_threshold=100)
    upstream.repo.fail("503", "/packages/alpha")
    answers = await ask_as_each_client(proxy, "/packages/alpha")
    assert_message_only_where_printed(answers, 502)


async def test_bad_request(proxy: TestClient[Any, Any]) -> None:
    answers = await ask_as_each_client(proxy, "/tarballs/alpha.tar")
    assert_message_only_where_printed(answers, 400)


async def test_upstream_404_and_success_carry_no_message_for_anyone(
    proxy: TestClient[Any, Any],
) -> None:
    for path, status in [("/packages/nosuchpackage", 404), ("/packages/alpha", 200)]:
        for a in await ask_as_each_client(proxy, path):
            assert (a.status, a.header) == (status, None), (path, a)
