"""Clients of an in-flight fetch are never left hanging: they stream it as it arrives or
get an answer within inflight_wait (a 503/504 with a plain-text reason); HEAD does not
wait for the body; one slow object does not hold up others; a client that leaves
mid-stream is an everyday event, not an error."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from hexproxy.config import Config
from hexproxy.store.cachekey import tarball_key
from hexproxy.web.ops import METRICS
from hexproxy.web.server import start
from hexproxy.web.state import CACHE
from tests.conftest import ProxyFactory, Upstream

GAMMA = "/tarballs/gamma-0.1.0.tar"
BETA = "/tarballs/beta-2.0.0.tar"
HANG_GUARD = 10.0  # generous: only catches a client left hanging


async def _timed(proxy: TestClient[Any, Any], method: str, path: str) -> tuple[int, bytes, float]:
    started = time.monotonic()
    async with proxy.request(method, path) as response:
        return response.status, await response.read(), time.monotonic() - started


async def test_a_black_holed_object_answers_504_and_others_are_not_held_up(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(upstream__read_timeout=60, upstream__inflight_wait=0.3)
    upstream.repo.fail("hang", GAMMA)
    upstream.repo.fail("hang", "/packages/oak")
    try:
        for method in ("GET", "HEAD"):
            status, body, seconds = await _timed(proxy, method, GAMMA)
            assert status == 504
            assert seconds < HANG_GUARD
            if method == "GET":
                assert b"has not started sending /tarballs/gamma-0.1.0.tar" in body
        # A registry file with no cached copy: the same bound.
        status, body, _ = await _timed(proxy, "GET", "/packages/oak")
        assert (status, b"has not answered for /packages/oak" in body) == (504, True)
        # Meanwhile other objects are fetched and served as usual.
        status, body, _ = await _timed(proxy, "GET", BETA)
        assert (status, body) == (200, upstream.repo.files[BETA.lstrip("/")])
        assert upstream.repo.count(GAMMA) == 1  # one fetch, still running
    finally:
        upstream.repo.heal()


async def test_head_of_an_object_in_flight_is_answered_from_its_headers(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy()
    expected = upstream.repo.files[GAMMA.lstrip("/")]
    upstream.repo.fail("trickle", GAMMA)
    upstream.repo.trickle_delay = 0.02
    slow_get = asyncio.create_task(_timed(proxy, "GET", GAMMA))
    try:
        head = await proxy.head(GAMMA)
        assert head.status == 200
        assert head.headers["Content-Length"] == str(len(expected))
        assert head.headers["ETag"].strip('"') == _sha256(expected)
        assert not slow_get.done()  # answered long before the body has arrived
    finally:
        upstream.repo.trickle_delay = 0.0
    status, body, _ = await slow_get
    assert (status, body) == (200, expected)
    assert upstream.repo.count(GAMMA) == 1


async def test_another_workers_fetch_is_waited_for_boundedly_then_503(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(upstream__inflight_wait=0.3)
    storage = proxy.app[CACHE].storage
    locks = storage.root / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    name = tarball_key("gamma", "0.1.0").path.replace("/", "_")
    fd = os.open(locks / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what the worker that is fetching it holds
    try:
        status, body, seconds = await _timed(proxy, "GET", GAMMA)
        assert status == 503
        assert b"being fetched by another worker" in body
        assert seconds < HANG_GUARD
        assert upstream.repo.count(GAMMA) == 0
    finally:
        os.close(fd)  # the other worker is done (without storing it, here)
    for _ in range(200):  # bounded: the waiting fetch takes the lock and runs
        status, body, _ = await _timed(proxy, "GET", GAMMA)
        if status == 200:
            break
        await asyncio.sleep(0.02)
    assert (status, body) == (200, upstream.repo.files[GAMMA.lstrip("/")])
    assert upstream.repo.count(GAMMA) == 1


async def test_a_client_leaving_mid_stream_is_quiet_and_counted(
    proxy_config: Callable[..., Config], upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    # The server as users run it: aiohttp's test server cancels a handler whose client
    # left, the real one lets it notice on its next write.
    running = await start(proxy_config(server__listen="127.0.0.1:0"))
    try:
        upstream.repo.fail("trickle", GAMMA)
        upstream.repo.trickle_delay = 0.01
        caplog.set_level(logging.DEBUG)
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(f"GET {GAMMA} HTTP/1.1\r\nHost: proxy\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_GUARD)
        assert head.startswith(b"HTTP/1.1 200")
        await asyncio.wait_for(reader.read(1), HANG_GUARD)  # the stream has begun
        writer.transport.abort()
        metrics = running.runner.app[METRICS]
        for _ in range(500):  # bounded: the next write finds the connection gone
            if metrics.totals().value("client_disconnects"):
                break
            await asyncio.sleep(0.01)
        assert metrics.totals().value("client_disconnects") == 1
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        assert "client left during /tarballs/gamma-0.1.0.tar" in caplog.text
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{running.port}/_hexproxy/metrics"
            async with session.get(url) as response:
                assert "hexproxy_client_disconnects_total 1.0" in await response.text()
    finally:
        upstream.repo.trickle_delay = 0.0
        await running.stop()


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
