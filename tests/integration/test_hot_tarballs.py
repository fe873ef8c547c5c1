"""Hot tarballs: small stored files asked for again are answered from memory by the fast
path, exactly as aiohttp answers them from disk, and never once the file on disk changed."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from hexproxy.cache.footprint import FILE_OVERHEAD
from hexproxy.cli import main as cli_main
from hexproxy.config import Config
from hexproxy.store.cachekey import key_for_request_path, tarball_key
from hexproxy.web import fastpath
from hexproxy.web.server import Running, start
from hexproxy.web.state import CACHE
from tests.conftest import Upstream
from tests.integration.test_fastpath import get, raw, read_answer
from tests.support.keys import test_private_key as key
from tests.support.repo import PackageSpec, build_repo
from tests.support.waiting import wait_until

# Over the size headers and body are joined at, so the writev(2) path is taken.
WIDE = "/tarballs/wide-1.0.0.tar"


@pytest.fixture
async def pair(
    proxy_config: Callable[..., Config], upstream: Upstream
) -> AsyncIterator[tuple[Running, Running]]:
    """Two servers over one cache directory: fast path on, and off (aiohttp alone)."""
    wide = build_repo([PackageSpec("wide", "1.0.0", files={"blob": os.urandom(40_000)})], key())
    upstream.repo.publish("packages/wide", wide["packages/wide"])
    upstream.repo.publish(WIDE.lstrip("/"), wide[WIDE.lstrip("/")])
    assert fastpath._JOIN_MAX < len(wide[WIDE.lstrip("/")]) <= fastpath.HOT_MAX
    fast = await start(proxy_config(server__listen="127.0.0.1:0"))
    slow = await start(proxy_config(server__listen="127.0.0.1:0", server__fast_path=False))
    yield fast, slow
    await fast.stop()
    await slow.stop()


async def heat(proxy: Running, path: str) -> None:
    """Ask until the fast path holds ``path``'s bytes in memory."""
    assert proxy.fast is not None
    loads = proxy.fast.hot_loads
    for _ in range(fastpath.HOT_AFTER + 2):  # the miss and aiohttp's first hit come first
        await raw(proxy.port, get(path), 1)
    await wait_until(lambda: proxy.fast is not None and proxy.fast.hot_loads > loads, "hot load")


async def ask(port: int, request: bytes) -> bytes:
    """One answer on a connection of its own; a HEAD's head only."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        if request.startswith(b"HEAD"):
            return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        return await read_answer(reader)
    finally:
        writer.close()


def parts(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, body


COMPARED = ("ETag", "Content-Length", "Content-Type", "Cache-Control", "Last-Modified", "X-Cache")
NOT_MODIFIED = ("ETag", "Cache-Control", "X-Cache")


@pytest.mark.parametrize("path", ["/tarballs/gamma-0.1.0.tar", WIDE])
async def test_hot_tarball_answers_match_aiohttp(
    pair: tuple[Running, Running], upstream: Upstream, path: str
) -> None:
    fast, slow = pair
    assert fast.fast is not None
    await heat(fast, path)
    expected = upstream.repo.files[path.lstrip("/")]
    etag = parts((await raw(slow.port, get(path), 1))[0])[1]["ETag"]
    requests = {
        "GET": get(path),
        "HEAD": get(path).replace(b"GET", b"HEAD", 1),
        "If-None-Match": get(path, f"If-None-Match: {etag}\r\n"),
        "other If-None-Match": get(path, 'If-None-Match: "other"\r\n'),
        # Neither side does ranges: both send the whole file with 200.
        "Range": get(path, "Range: bytes=0-9\r\n"),
    }
    for name, request in requests.items():
        hits = fast.fast.hot_hits
        mine, theirs = await ask(fast.port, request), await ask(slow.port, request)
        status, headers, body = parts(mine)
        assert headers["Server"] == "hexproxy", name  # the fast path answered
        assert (status, body) == parts(theirs)[::2], name
        # A 304 carries the validators and caching headers only (web/fastpath.py).
        for header in COMPARED if status.endswith("200 OK") else NOT_MODIFIED:
            assert headers.get(header) == parts(theirs)[1].get(header), (name, header)
        sends_body = status.endswith("200 OK") and name != "HEAD"
        assert fast.fast.hot_hits == hits + sends_body, name  # from memory, not sendfile
        if sends_body:
            assert body == expected, name
    assert upstream.repo.count(path) == 1


async def test_a_removed_tarball_is_not_served_from_memory(
    pair: tuple[Running, Running], upstream: Upstream, proxy_config: Callable[..., Config]
) -> None:
    fast, _ = pair
    assert fast.fast is not None
    await heat(fast, WIDE)
    config = proxy_config()
    argv = ["cache", "rm", "wide@1.0.0", "--cache-dir", config.cache.dir]
    argv += ["--public-key", config.upstream.public_key]
    with ThreadPoolExecutor(1) as thread:  # its own event loop, as its own process would
        assert thread.submit(cli_main, argv).result() == 0
    hits = fast.fast.hot_hits
    (answer,) = await raw(fast.port, get(WIDE), 1)
    _, headers, body = parts(answer)
    assert headers["X-Cache"] == "MISS" and body == upstream.repo.files[WIDE.lstrip("/")]
    assert fast.fast.hot_hits == hits
    assert upstream.repo.count(WIDE) == 2
    # And the memory the old bytes took is no longer counted.
    cache = fast.runner.app[CACHE]
    held = cache.known_file(tarball_key("wide", "1.0.0"))
    assert held is None or held.memo.size == 0


@pytest.mark.parametrize("tarball", ["/tarballs/gamma-0.1.0.tar", WIDE])
async def test_a_replaced_tarball_is_not_served_from_memory(
    pair: tuple[Running, Running], tarball: str
) -> None:
    """Also for a head repeated byte for byte (a small tarball's, kept in the fast path's
    table of repeated heads): each answer first proves the file is the one read."""
    fast, _ = pair
    assert fast.fast is not None
    await heat(fast, tarball)
    await raw(fast.port, get(tarball), 1)  # answered from memory: now a repeated head
    assert (get(tarball) in fast.fast.hits) == (tarball != WIDE)
    cache = fast.runner.app[CACHE]
    found = key_for_request_path(tarball)
    assert found is not None
    path = cache.storage.path(found)
    # Same size, other bytes, a new file: what an operator's restore could do.
    other = path.with_name("other")
    other.write_bytes(b"x" * path.stat().st_size)
    os.replace(other, path)
    hits = fast.fast.hot_hits
    (answer,) = await raw(fast.port, get(tarball), 1)
    assert fast.fast.hot_hits == hits  # the bytes held in memory were not sent
    assert b"Server: hexproxy" not in answer  # aiohttp looked at the cache again


async def test_a_touched_tarball_keeps_its_connection_on_the_fast_path(
    pair: tuple[Running, Running], upstream: Upstream
) -> None:
    """The evictor records each access as the file's mtime. A keep-alive client must not
    be handed to aiohttp for good because of it (it was: a whole benchmark round went
    to aiohttp after each flush): the answer comes from the file, and the bytes are read
    and checked again."""
    fast, _ = pair
    assert fast.fast is not None
    await heat(fast, WIDE)
    cache = fast.runner.app[CACHE]
    path = cache.storage.path(tarball_key("wide", "1.0.0"))
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + 60))
    loads, hits = fast.fast.hot_loads, fast.fast.hot_hits
    requests = fastpath.HOT_AFTER + 4
    reader, writer = await asyncio.open_connection("127.0.0.1", fast.port)
    try:
        for i in range(requests):
            writer.write(get(WIDE))
            answer = await read_answer(reader)
            _, headers, body = parts(answer)
            assert headers.get("Server") == "hexproxy", i  # the fast path answered
            assert body == upstream.repo.files[WIDE.lstrip("/")]
            if i == fastpath.HOT_AFTER:
                await wait_until(
                    lambda: fast.fast is not None and fast.fast.hot_loads > loads, "re-read"
                )
    finally:
        writer.close()
    assert fast.fast.hot_loads == loads + 1
    assert fast.fast.hot_hits > hits  # from memory again once read


async def test_large_tarballs_stay_on_sendfile(
    pair: tuple[Running, Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, _ = pair
    assert fast.fast is not None
    monkeypatch.setattr(fastpath, "HOT_MAX", 30_000)  # wide (~50 KB) is now "large"
    for _ in range(fastpath.HOT_AFTER + 3):
        await raw(fast.port, get(WIDE), 1)
    assert fast.fast.hot_loads == 0 and fast.fast.hot_hits == 0


async def test_hot_bodies_count_against_the_memory_budget(pair: tuple[Running, Running]) -> None:
    fast, _ = pair
    cache = fast.runner.app[CACHE]
    before = cache._memory.bytes
    await heat(fast, WIDE)
    size = cache.known_file(tarball_key("wide", "1.0.0")).size
    assert cache._memory.bytes - before >= size
    assert cache._memory.bytes <= cache._memory.budget


async def test_stored_file_records_stay_within_the_budget(
    pair: tuple[Running, Running], upstream: Upstream
) -> None:
    """Cache._files used to keep a record per tarball ever served, without limit."""
    fast, _ = pair
    cache = fast.runner.app[CACHE]
    tarballs = sorted(p for p in upstream.repo.files if p.startswith("tarballs/"))
    for path in tarballs:  # fetched, and then each one's record made
        for _ in range(2):
            await raw(fast.port, get("/" + path), 1)
    assert all(cache.known_file(key_for_request_path("/" + p)) for p in tarballs)
    cache._memory.budget = 3 * FILE_OVERHEAD  # room for three records, nothing else
    cache._memory._shrink()
    for path in tarballs:
        await raw(fast.port, get("/" + path), 1)
        assert cache._memory.bytes <= cache._memory.budget
    known = [p for p in tarballs if cache.known_file(key_for_request_path("/" + p))]
    assert known == tarballs[-3:]  # the three served last
