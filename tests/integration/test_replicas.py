"""Two real ``hexproxy serve`` processes on one bucket of a real SeaweedFS.

Each replica has its own cache directory (its local tier) and the same ``[store]``
settings; credentials reach them the way they reach a pod, through AWS_* variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from hexproxy.config import StoreConfig
from hexproxy.errors import ObjectMissing
from hexproxy.store.cachekey import package_key, tarball_key
from hexproxy.store.s3 import S3Store
from tests.conftest import Upstream, small_tree
from tests.support.keys import test_private_key
from tests.support.proxy_process import ProxyProcess, ProxyProcesses
from tests.support.repo import PackageSpec, build_repo
from tests.support.s3server import BUCKET, REGION, SeaweedServer, require_weed

TARBALL = "/tarballs/alpha-1.0.0.tar"
WAIT = 30.0  # hang guard for conditions polled below


def store_settings(store: StoreConfig, endpoint: str | None = None) -> dict[str, str]:
    return {
        "STORE_KIND": "s3",
        "STORE_BUCKET": store.bucket,
        "STORE_PREFIX": store.prefix,
        "STORE_ENDPOINT_URL": endpoint or store.endpoint_url,
        "STORE_REGION": store.region,
        # Generous: CI runs two suites at once; a stopped store refuses at once anyway.
        "STORE_TIMEOUT": "10",
    }


async def get(url: str) -> tuple[int, bytes]:
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with (
        aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
        session.get(url) as response,
    ):
        return response.status, await response.read()


async def stored(store: S3Store, key: object, within: float = WAIT) -> bytes:
    """The object's body once it is in the bucket (uploads run in the background)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return (await store.get(key)).body  # type: ignore[arg-type]
        except ObjectMissing:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def bucket(config: StoreConfig) -> AsyncIterator[S3Store]:
    store = S3Store(config)
    try:
        yield store
    finally:
        await store.close()


async def test_b_serves_what_a_fetched_with_upstream_refused(
    proxies: ProxyProcesses, upstream: Upstream, tmp_path: Path, s3_store_config: StoreConfig
) -> None:
    settings = store_settings(s3_store_config)
    a = await proxies.start(upstream.url, tmp_path / "a", **settings)
    b = await proxies.start(upstream.url, tmp_path / "b", **settings)
    package = await get(a.url + "/packages/alpha")
    tarball = await get(a.url + TARBALL)
    assert package[0] == tarball[0] == 200
    async with bucket(s3_store_config) as store:
        assert await stored(store, tarball_key("alpha", "1.0.0")) == tarball[1]
        assert await stored(store, package_key("alpha")) == package[1]
    await upstream.stop()
    assert await get(b.url + "/packages/alpha") == package, b.log_tail()
    assert await get(b.url + TARBALL) == tarball, b.log_tail()


async def test_both_fetching_one_cold_object_store_one_verified_copy(
    proxies: ProxyProcesses, upstream: Upstream, tmp_path: Path, s3_store_config: StoreConfig
) -> None:
    settings = store_settings(s3_store_config)
    a = await proxies.start(upstream.url, tmp_path / "a", **settings)
    b = await proxies.start(upstream.url, tmp_path / "b", **settings)
    answers = await asyncio.gather(*(get(p.url + TARBALL) for p in (a, b, a, b, a, b)))
    expected = upstream.repo.files[TARBALL.lstrip("/")]
    assert answers == [(200, expected)] * 6
    assert upstream.repo.count(TARBALL) <= 2  # at most once per replica
    async with bucket(s3_store_config) as store:
        assert await stored(store, tarball_key("alpha", "1.0.0")) == expected
        tarballs = [item.key async for item in store.list() if item.key.kind.value == "tarball"]
        assert tarballs == [tarball_key("alpha", "1.0.0")]


async def test_store_stopped_mid_run_both_keep_answering_and_nothing_bad_is_stored(
    proxies: ProxyProcesses,
    upstream: Upstream,
    tmp_path: Path,
    s3_env: dict[str, str],
) -> None:
    server = SeaweedServer(tmp_path / "weed", require_weed())
    try:
        server.start()
        config = StoreConfig(
            kind="s3", bucket=BUCKET, prefix="stop/", endpoint_url=server.endpoint, region=REGION
        )
        settings = store_settings(config)
        a = await proxies.start(upstream.url, tmp_path / "a", **settings)
        b = await proxies.start(upstream.url, tmp_path / "b", **settings)
        warm = await get(a.url + TARBALL)
        assert warm[0] == 200
        async with bucket(config) as store:
            await stored(store, tarball_key("alpha", "1.0.0"))
        server.stop()

        # A answers from its own disk; B, which never saw these, from upstream.
        assert await get(a.url + TARBALL) == warm
        assert await get(b.url + TARBALL) == warm, b.log_tail()
        for proxy in (a, b):
            for path in ("/packages/beta", "/tarballs/beta-2.0.0.tar", "/packages/gamma"):
                status, body = await get(proxy.url + path)
                assert (status, body) == (200, upstream.repo.files[path.lstrip("/")])
            status, text = await get(proxy.url + "/_hexproxy/ready")
            assert status == 200
            assert b"store: UNREACHABLE" in text
        # What each replica stored is whole and matches the signed checksums.
        for proxy in (a, b):
            assert_cache_matches_upstream(proxy, upstream)
    finally:
        server.stop()


def assert_cache_matches_upstream(proxy: ProxyProcess, upstream: Upstream) -> None:
    root = proxy.cache_dir
    checked = 0
    for path in root.rglob("*.tar"):
        name = path.name
        assert path.read_bytes() == upstream.repo.files[f"tarballs/{name}"], name
        checked += 1
    assert checked >= 1


class SlowRelay:
    """A TCP relay to the S3 server that passes uploads through slowly, so a test can
    kill a replica while its PUT is on the wire; ``sent`` counts the bytes passed up."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        down = asyncio.create_task(self._pipe(up_reader, writer, slow=False))
        self._tasks.add(down)
        try:
            await self._pipe(reader, up_writer, slow=True)
        finally:
            down.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await down
            self._tasks.discard(down)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, slow: bool
    ) -> None:
        try:
            while data := await reader.read(16 * 1024):
                writer.write(data)
                await writer.drain()
                if slow:
                    self.sent += len(data)
                    await asyncio.sleep(0.02)
        except OSError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_sigkill_mid_upload_leaves_no_partial_object(
    proxies: ProxyProcesses,
    upstream: Upstream,
    tmp_path: Path,
    s3_store_config: StoreConfig,
    s3_server: SeaweedServer,
) -> None:
    big = build_repo(
        [*small_tree(), PackageSpec("huge", "1.0.0", files={"blob": os.urandom(3_000_000)})],
        test_private_key(),
    )
    upstream.repo.publish("packages/huge", big["packages/huge"])
    upstream.repo.publish("tarballs/huge-1.0.0.tar", big["tarballs/huge-1.0.0.tar"])
    relay = SlowRelay(int(s3_server.endpoint.rsplit(":", 1)[1]))
    port = await relay.start()
    try:
        settings = store_settings(s3_store_config, f"http://127.0.0.1:{port}")
        a = await proxies.start(upstream.url, tmp_path / "a", **settings)
        assert (await get(a.url + "/tarballs/huge-1.0.0.tar"))[0] == 200
        deadline = time.monotonic() + WAIT
        while relay.sent < 1_000_000:  # well into the tarball's PUT, far from its end
            assert time.monotonic() < deadline, "the upload never started"
            await asyncio.sleep(0.02)
        assert a._proc is not None
        a._proc.send_signal(signal.SIGKILL)
        await a.stop()
    finally:
        await relay.close()
    key = tarball_key("huge", "1.0.0")
    async with bucket(s3_store_config) as store:
        with pytest.raises(ObjectMissing):
            await store.get(key)
        assert key not in [item.key async for item in store.list()]
        # B, on the same bucket, fetches it whole and its upload completes.
        b = await proxies.start(upstream.url, tmp_path / "b", **store_settings(s3_store_config))
        expected = big["tarballs/huge-1.0.0.tar"]
        assert await get(b.url + "/tarballs/huge-1.0.0.tar") == (200, expected)
        body = await stored(store, key)
        assert hashlib.sha256(body).digest() == hashlib.sha256(expected).digest()
