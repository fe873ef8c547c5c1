"""An upstream that sends far too much: bodies over the configured limits are cut off
(nothing stored, the client gets an error), and a gzip bomb in a registry file is never
decompressed without a bound."""

from __future__ import annotations

import gzip
import random
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest

from hexproxy.config import UpstreamConfig
from tests.conftest import ProxyFactory, small_tree
from tests.faults.conftest import (
    Served,
    StartProxy,
    ThrottledRepo,
    cache_problems,
    get_many,
)
from tests.support.keys import test_private_key
from tests.support.repo import build_repo

MiB = 1024 * 1024
TARBALL = "tarballs/alpha-1.0.0.tar"


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return build_repo(small_tree(), test_private_key())


async def _proxy(
    aiohttp_server: Any, make_proxy: ProxyFactory, repo: ThrottledRepo, **overrides: Any
) -> Any:
    server = await aiohttp_server(repo.app())
    upstream = str(server.make_url("")).rstrip("/")
    return await make_proxy(upstream__url=upstream, upstream__builds_url=upstream, **overrides)


async def _served(
    aiohttp_server: Any, start_proxy: StartProxy, repo: ThrottledRepo, **overrides: Any
) -> Served:
    """In this process and as ``hexproxy serve``."""
    server = await aiohttp_server(repo.app())
    upstream = str(server.make_url("")).rstrip("/")
    return await start_proxy(upstream__url=upstream, upstream__builds_url=upstream, **overrides)


def test_default_tarball_limit_is_hex_cores() -> None:
    """hex_core refuses tarballs over 16 MiB; so does the proxy, out of the box."""
    assert UpstreamConfig().max_tarball_size == 16 * MiB


@pytest.mark.parametrize("chunked", [False, True], ids=["declared-length", "chunked"])
async def test_oversized_tarball_is_cut_off(
    aiohttp_server: Any, start_proxy: StartProxy, files: dict[str, bytes], chunked: bool
) -> None:
    huge = random.Random(1).randbytes(4 * MiB)  # 16x the limit below
    repo = ThrottledRepo(dict(files), chunked=chunked, override={TARBALL: huge})
    proxy = await _served(aiohttp_server, start_proxy, repo, upstream__max_tarball_size=256 * 1024)

    answers = await get_many(proxy.make_url("/" + TARBALL), 20)

    assert not any(a.status == 200 and a.body is not None for a in answers)
    assert all(a.body is None or len(a.body) < 512 * 1024 for a in answers)
    cache_dir = proxy.cache_dir
    await proxy.settle()
    assert not (cache_dir / "tarballs/alpha/alpha-1.0.0.tar").exists()
    assert cache_problems(cache_dir, files) == []


@pytest.mark.parametrize("chunked", [False, True], ids=["declared-length", "chunked"])
async def test_oversized_registry_file_is_cut_off(
    aiohttp_server: Any, start_proxy: StartProxy, files: dict[str, bytes], chunked: bool
) -> None:
    repo = ThrottledRepo(
        dict(files), chunked=chunked, override={"packages/alpha": b"\x1f\x8b" * (2 * MiB)}
    )
    proxy = await _served(aiohttp_server, start_proxy, repo, upstream__max_registry_size=MiB)

    answers = await get_many(proxy.make_url("/packages/alpha"), 20)

    assert all(a.status >= 500 for a in answers), {a.status for a in answers}
    assert not (proxy.cache_dir / "registry/packages/alpha").exists()
    assert cache_problems(proxy.cache_dir, files) == []


def gzip_bomb(expanded: int) -> bytes:
    """A gzip member that expands to ``expanded`` zero bytes (about 1000:1)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MiB)
    parts = [deflate.compress(zeros) for _ in range(expanded // MiB)]
    return b"".join(parts) + deflate.flush()


async def test_gzip_bomb_in_a_registry_file_is_not_expanded_without_bound(
    aiohttp_server: Any, make_proxy: ProxyFactory, files: dict[str, bytes], tmp_path: Path
) -> None:
    bomb = gzip_bomb(256 * MiB)
    assert len(bomb) < MiB  # well under max_registry_size: only the gunzip bound stops it
    repo = ThrottledRepo(dict(files), override={"packages/alpha": bomb, "names": bomb})
    client = await _proxy(aiohttp_server, make_proxy, repo)  # default limits

    tracemalloc.start()
    try:
        answers = await get_many(str(client.make_url("/packages/alpha")), 2)
        names = await get_many(str(client.make_url("/names")), 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert all(a.status >= 500 for a in answers + names)
    # The default bound is max_registry_size (64 MiB) of output; expanding the bomb
    # would take 256 MiB per request.
    assert peak < 150 * MiB, f"peak {peak / MiB:.0f} MiB"
    assert not (tmp_path / "cache/registry/packages/alpha").exists()
    assert not (tmp_path / "cache/registry/names").exists()


async def test_gzip_bomb_respects_a_small_configured_bound(
    aiohttp_server: Any, make_proxy: ProxyFactory, files: dict[str, bytes]
) -> None:
    repo = ThrottledRepo(dict(files), override={"packages/alpha": gzip_bomb(64 * MiB)})
    client = await _proxy(aiohttp_server, make_proxy, repo, upstream__max_registry_size=4 * MiB)

    tracemalloc.start()
    try:
        answers = await get_many(str(client.make_url("/packages/alpha")), 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert answers[0].status >= 500
    assert peak < 24 * MiB, f"peak {peak / MiB:.0f} MiB"
    assert gzip.decompress(files["packages/alpha"])  # the real file stays a valid gzip
