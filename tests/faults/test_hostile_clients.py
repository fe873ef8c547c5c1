"""Clients that misbehave: never read, dribble headers, send enormous headers or paths.
The proxy answers them with 4xx (never a crash), its memory stays bounded, and
well-behaved clients are served meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ProxyFactory
from tests.faults.conftest import ThrottledRepo, get_many, settle
from tests.support.keys import test_private_key
from tests.support.repo import PackageSpec, build_repo
from tests.support.waiting import HANG_GUARD

MiB = 1024 * 1024
TARBALL = "tarballs/big-1.0.0.tar"


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    blob = random.Random(7).randbytes(3 * 1000 * 1000)
    return build_repo([PackageSpec("big", "1.0.0", files={"priv/blob": blob})], test_private_key())


async def _proxy(aiohttp_server: Any, make_proxy: ProxyFactory, files: dict[str, bytes]) -> Any:
    server = await aiohttp_server(ThrottledRepo(dict(files)).app())
    upstream = str(server.make_url("")).rstrip("/")
    return await make_proxy(upstream__url=upstream, upstream__builds_url=upstream)


@contextlib.asynccontextmanager
async def raw_connections(
    host: str, port: int, count: int, *, rcvbuf: int | None = None
) -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    conns = []
    try:
        for _ in range(count):
            sock = socket.socket()
            if rcvbuf is not None:  # a tiny window, so the kernel cannot read for the client
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            conns.append(await asyncio.open_connection(sock=sock))
        yield conns
    finally:
        for _, writer in conns:
            writer.transport.abort()


async def status_of(host: str, port: int, request: bytes) -> int:
    """Send raw bytes, return the status code of the answer (0 if the connection dropped)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), HANG_GUARD)
    except (ConnectionError, TimeoutError):
        return 0
    finally:
        writer.transport.abort()
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


async def assert_served(url: str) -> None:
    """A well-behaved client gets a whole 200 answer; the time limit is only a hang guard
    (how fast is bench/'s business, not a pass/fail test's)."""
    [answer] = await get_many(url, 1, seconds=HANG_GUARD)
    assert answer.status == 200 and answer.body is not None


@pytest.mark.parametrize("warm", [False, True], ids=["miss", "hit"])
async def test_clients_that_never_read_do_not_grow_memory(
    aiohttp_server: Any,
    make_proxy: ProxyFactory,
    files: dict[str, bytes],
    tmp_path: Path,
    warm: bool,
) -> None:
    client = await _proxy(aiohttp_server, make_proxy, files)
    host, port = client.host, client.port
    await get_many(str(client.make_url("/packages/big")), 1)
    if warm:
        await get_many(str(client.make_url("/" + TARBALL)), 1)
    request = f"GET /{TARBALL} HTTP/1.1\r\nHost: x\r\n\r\n".encode()

    tracemalloc.start()
    try:
        async with raw_connections(host, port, 30, rcvbuf=4096) as conns:
            for _, writer in conns:
                writer.write(request)
            # All thirty are being answered, so the proxy has 30 x 3 MB to send them: that
            # would be 90 MB in memory if nothing pushed back.
            for reader, _ in conns:
                status = await asyncio.wait_for(reader.readline(), HANG_GUARD)
                assert status.startswith(b"HTTP/1.1 200 "), status
            # Others are served meanwhile; by the end of the tarball, the bytes the stalled
            # clients would have been sent have all been read from disk or upstream.
            await assert_served(str(client.make_url("/packages/big")))
            await assert_served(str(client.make_url("/" + TARBALL)))
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 30 * MiB, f"peak {peak / MiB:.0f} MiB"
    await settle(tmp_path / "cache")  # the aborted streams have all wound down


async def test_slowloris_headers_do_not_starve_others(
    aiohttp_server: Any, make_proxy: ProxyFactory, files: dict[str, bytes]
) -> None:
    client = await _proxy(aiohttp_server, make_proxy, files)
    async with raw_connections(client.host, client.port, 100) as conns:
        for round_ in range(5):  # five slow rounds of one more header line each
            for _, writer in conns:
                writer.write(b"GET /packages/big HTTP/1.1\r\n" if round_ == 0 else b"X-Slow: 1\r\n")
                await writer.drain()
            # A whole answer for another client while the hundred sit on half a request.
            await assert_served(str(client.make_url("/packages/big")))


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /packages/big HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 * 1024) + b"\r\n\r\n",
        b"GET /packages/big HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(10_000))
        + b"\r\n",
        b"GET /packages/" + b"a" * (64 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /tarballs/" + b"a" * 5000 + b"-1.0.0.tar HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /packages/" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /installs/" + b"a/" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /" + b"%2e%2e/" * 1000 + b"etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET \x00\xff\xfe HTTP/1.1\r\n\r\n",
    ],
    ids=[
        "64k-header",
        "10k-headers",
        "64k-path",
        "5k-tarball-name",
        "5k-package-name",
        "deep-installs",
        "encoded-traversal",
        "binary-garbage",
    ],
)
async def test_oversized_or_garbage_requests_get_4xx(
    aiohttp_server: Any,
    make_proxy: ProxyFactory,
    files: dict[str, bytes],
    tmp_path: Path,
    request_bytes: bytes,
) -> None:
    client = await _proxy(aiohttp_server, make_proxy, files)
    status = await status_of(client.host, client.port, request_bytes)
    assert 400 <= status < 500, status
    # Still alive and well.
    await assert_served(str(client.make_url("/packages/big")))
    await settle(tmp_path / "cache")
