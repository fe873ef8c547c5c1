"""The fast path answers fresh registry hits exactly as aiohttp would, and hands
everything else, on the same connection, to aiohttp."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from hexproxy.cache.entries import Entry
from hexproxy.config import Config
from hexproxy.store.cachekey import package_key, tarball_key
from hexproxy.web import fastpath
from hexproxy.web.fastpath import FastPath, Prepared
from hexproxy.web.ops import EVICTOR, METRICS
from hexproxy.web.requesthead import HeadReader
from hexproxy.web.server import Running, start
from hexproxy.web.state import CACHE
from tests.conftest import Upstream
from tests.support.clock import later
from tests.support.keys import test_private_key as key
from tests.support.repo import PackageSpec, build_repo
from tests.support.waiting import wait_until

SAME = ("ETag", "Content-Length", "Content-Type", "Cache-Control", "Last-Modified")


@pytest.fixture
async def running(
    proxy_config: Callable[..., Config], upstream: Upstream
) -> AsyncIterator[Callable[..., Any]]:
    started: list[Running] = []

    async def go(**overrides: Any) -> Running:
        overrides.setdefault("server__listen", "127.0.0.1:0")
        instance = await start(proxy_config(**overrides))
        started.append(instance)
        return instance

    yield go
    for instance in started:
        await instance.stop()


async def test_hit_matches_the_aiohttp_answer(running: Any, upstream: Upstream) -> None:
    proxy = await running()
    url = f"http://127.0.0.1:{proxy.port}/packages/alpha"
    # One connection per request: a connection that aiohttp answered once stays with it.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(url) as miss:
            miss_body = await miss.read()
            assert miss.headers["X-Cache"] == "MISS"
            assert "aiohttp" in miss.headers["Server"]
        async with session.get(url) as hit:
            assert hit.status == 200
            assert hit.headers["Server"] == "hexproxy"  # answered by the fast path
            assert hit.headers["X-Cache"] == "HIT"
            assert await hit.read() == miss_body == upstream.repo.files["packages/alpha"]
            assert "Content-Encoding" not in hit.headers
            assert "Date" in hit.headers
            for name in SAME:
                assert hit.headers[name] == miss.headers[name], name
        async with session.head(url) as head:
            assert head.headers["Server"] == "hexproxy"
            assert head.headers["Content-Length"] == str(len(miss_body))
            assert await head.read() == b""
        etag = miss.headers["ETag"]
        for header, status in ((etag, 304), (f'"x", W/{etag}', 304), ("*", 304), ("", 200)):
            async with session.get(url, headers={"If-None-Match": header}) as conditional:
                assert conditional.status == status, header
                assert conditional.headers["ETag"] == etag
    assert upstream.repo.count("/packages/alpha") == 1


async def raw(port: int, payload: bytes, expect: int) -> list[bytes]:
    """Send bytes on one connection, read ``expect`` responses (split on their heads)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    answers = []
    try:
        for _ in range(expect):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
            answers.append(head + body)
    finally:
        writer.close()
    return answers


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


async def test_pipelined_requests_keep_their_order_across_the_handover(
    running: Any, upstream: Upstream
) -> None:
    proxy = await running()
    await raw(proxy.port, get("/packages/alpha") + get("/packages/beta"), 2)  # warm both
    files = upstream.repo.files
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(get("/packages/alpha"))
        first = await read_answer(reader)
        assert b"Server: hexproxy" in first and first.endswith(files["packages/alpha"])
        # A later read the fast path cannot answer whole: all of it goes to aiohttp, in order.
        writer.write(get("/tarballs/beta-2.0.0.tar") + get("/packages/beta"))
        second, third = await read_answer(reader), await read_answer(reader)
    finally:
        writer.close()
    assert second.endswith(files["tarballs/beta-2.0.0.tar"])
    assert third.endswith(files["packages/beta"])
    assert b"Server: hexproxy" not in third  # the connection now belongs to aiohttp


async def test_a_read_is_answered_whole_by_one_side(running: Any, upstream: Upstream) -> None:
    """aiohttp answers a read with one 400 if any head in it is bad, so the fast path
    answers a read only if it can answer every request in it."""
    proxy = await running()
    await raw(proxy.port, get("/packages/alpha") + get("/packages/beta"), 2)  # warm both
    files = upstream.repo.files
    answers = await raw(proxy.port, get("/packages/alpha") + get("/packages/gamma"), 2)
    assert all(b"Server: hexproxy" not in a for a in answers)  # gamma is a miss: aiohttp's
    assert answers[0].endswith(files["packages/alpha"])
    assert answers[1].endswith(files["packages/gamma"])
    answers = await raw(proxy.port, get("/packages/alpha") + get("/packages/beta"), 2)
    assert all(b"Server: hexproxy" in a for a in answers)


async def test_what_the_fast_path_leaves_to_aiohttp(running: Any, upstream: Upstream) -> None:
    proxy = await running()
    await raw(proxy.port, get("/packages/alpha"), 1)
    cases = {
        "HTTP/1.0": b"GET /packages/alpha HTTP/1.0\r\nHost: x\r\n\r\n",
        "query": get("/packages/alpha?x=1"),
        "POST": b"POST /packages/alpha HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        "malformed header": b"GET /packages/alpha HTTP/1.1\r\nno colon here\r\n\r\n",
        "uncached": get("/packages/gamma"),
    }
    for what, payload in cases.items():
        (answer,) = await raw(proxy.port, payload, 1)
        assert b"Server: hexproxy" not in answer.split(b"\r\n\r\n")[0], what


async def test_stale_entries_go_through_the_policy(running: Any, upstream: Upstream) -> None:
    proxy = await running(cache__registry_ttl=0)
    answers = await raw(proxy.port, get("/packages/alpha") + get("/packages/alpha"), 2)
    assert b"X-Cache: MISS" in answers[0]
    assert b"X-Cache: REVALIDATED" in answers[1]
    assert upstream.repo.count("/packages/alpha") == 2


async def test_connection_close_is_honoured(running: Any) -> None:
    proxy = await running()
    await raw(proxy.port, get("/packages/alpha"), 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(get("/packages/alpha", "Connection: close\r\n"))
    data = await asyncio.wait_for(reader.read(), 10)  # returns at EOF: the server closed
    writer.close()
    assert b"Server: hexproxy" in data and b"Connection: close" in data


async def test_fast_hits_are_logged_and_counted(running: Any, upstream: Upstream) -> None:
    proxy = await running()
    assert proxy.access_log is not None
    proxy.access_log.stream = io.StringIO()
    await raw(proxy.port, get("/packages/alpha"), 1)
    await raw(proxy.port, get("/packages/alpha") * 3, 3)
    # One at a time: after the first, answered from the table of repeated heads.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    for _ in range(3):
        writer.write(get("/packages/alpha"))
        await read_answer(reader)
    writer.close()
    proxy.access_log.flush()
    lines = proxy.access_log.stream.getvalue().splitlines()
    assert len(lines) == 7
    size = len(upstream.repo.files["packages/alpha"])
    shape = (
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO hexproxy\.access: 127\.0\.0\.1 "
        rf'"GET /packages/alpha" 200 (MISS|HIT) {size}B \d+\.\dms'
    )
    assert all(re.fullmatch(shape, line) for line in lines), lines  # aiohttp's shape too
    assert [line.split()[-3] for line in lines] == ["MISS"] + ["HIT"] * 6
    totals = proxy.runner.app[METRICS].totals()
    assert totals.value("requests", "/packages/{name}", 200, "HIT") == 6
    assert totals.value("response_bytes", "/packages/{name}") == 7 * size
    assert totals.value("requests", "/packages/{name}", 200, "MISS") == 1


async def test_json_access_log(running: Any) -> None:
    proxy = await running(server__log_format="json")
    assert proxy.access_log is not None
    proxy.access_log.stream = io.StringIO()
    await raw(proxy.port, get("/packages/alpha") + get("/packages/alpha"), 2)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    for _ in range(2):  # the second from the table of repeated heads
        writer.write(get("/packages/alpha", "User-Agent: mix/2.5\r\n"))
        await read_answer(reader)
    writer.close()
    proxy.access_log.flush()
    records = [json.loads(line) for line in proxy.access_log.stream.getvalue().splitlines()]
    assert [r["cache"] for r in records] == ["MISS", "HIT", "HIT", "HIT"]
    assert [r["user_agent"] for r in records[2:]] == ["mix/2.5", "mix/2.5"]
    assert {r["path"] for r in records} == {"/packages/alpha"}
    assert all(r["status"] == 200 and r["bytes"] > 0 for r in records)


async def test_a_client_that_never_reads_does_not_grow_memory(running: Any) -> None:
    proxy = await running()
    await raw(proxy.port, get("/packages/alpha"), 1)
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(get("/packages/alpha") * 20000)  # never read the answers

    def open_connections() -> list[Any]:
        return [c for c in proxy.connections if c.transport is not None]

    await wait_until(lambda: any(c.paused for c in open_connections()), "the proxy to stop writing")
    (connection,) = open_connections()
    assert connection.reading_paused  # and it reads no more requests until the client reads
    assert connection.transport.get_write_buffer_size() < 4 * 1024 * 1024
    writer.close()


async def test_known_tarballs_are_sent_by_the_fast_path(running: Any, upstream: Upstream) -> None:
    proxy = await running()
    expected = upstream.repo.files["tarballs/gamma-0.1.0.tar"]
    (miss,) = await raw(proxy.port, get("/tarballs/gamma-0.1.0.tar"), 1)
    assert miss.endswith(expected) and b"X-Cache: MISS" in miss
    (first_hit,) = await raw(proxy.port, get("/tarballs/gamma-0.1.0.tar"), 1)
    assert b"Server: hexproxy" not in first_hit  # aiohttp reads the sidecar once
    # Pipelined: two sendfile answers then a registry hit, in order, on one connection.
    payload = get("/tarballs/gamma-0.1.0.tar") * 2 + get("/packages/gamma")
    answers = await raw(proxy.port, payload, 3)
    assert all(b"Server: hexproxy" in a for a in answers)
    assert answers[0].endswith(expected) and answers[1].endswith(expected)
    assert answers[2].endswith(upstream.repo.files["packages/gamma"])
    etag = first_hit.split(b"ETag: ")[1].split(b"\r\n")[0].decode()
    (not_modified,) = await raw(
        proxy.port, get("/tarballs/gamma-0.1.0.tar", f"If-None-Match: {etag}\r\n"), 1
    )
    assert not_modified.startswith(b"HTTP/1.1 304")
    assert upstream.repo.count("/tarballs/gamma-0.1.0.tar") == 1


async def test_a_pruned_tarball_goes_back_to_the_policy(running: Any, upstream: Upstream) -> None:
    proxy = await running()
    for _ in range(2):
        await raw(proxy.port, get("/tarballs/gamma-0.1.0.tar"), 1)
    cache = proxy.runner.app[CACHE]
    cache.storage.path(tarball_key("gamma", "0.1.0")).unlink()  # `cache prune` meanwhile
    (answer,) = await raw(proxy.port, get("/tarballs/gamma-0.1.0.tar"), 1)
    assert answer.endswith(upstream.repo.files["tarballs/gamma-0.1.0.tar"])
    assert b"X-Cache: MISS" in answer
    assert upstream.repo.count("/tarballs/gamma-0.1.0.tar") == 2


async def test_fast_tarball_hits_count_for_eviction_order(running: Any) -> None:
    proxy = await running()
    for _ in range(2):
        await raw(proxy.port, get("/tarballs/gamma-0.1.0.tar"), 1)
    recorder = proxy.runner.app[EVICTOR].access
    recorder.take()
    (answer,) = await raw(proxy.port, get("/tarballs/gamma-0.1.0.tar"), 1)
    assert b"Server: hexproxy" in answer
    assert set(recorder.pending) == {"/tarballs/gamma-0.1.0.tar"}


async def test_large_tarball_sent_in_several_pieces(running: Any, upstream: Upstream) -> None:
    """Bigger than a socket buffer: the first sendfile is partial, the rest follows."""
    big = build_repo([PackageSpec("huge", "1.0.0", files={"blob": os.urandom(3_000_000)})], key())
    upstream.repo.publish("packages/huge", big["packages/huge"])
    upstream.repo.publish("tarballs/huge-1.0.0.tar", big["tarballs/huge-1.0.0.tar"])
    proxy = await running()
    for _ in range(2):  # the miss, then aiohttp's first hit reads the sidecar
        await raw(proxy.port, get("/tarballs/huge-1.0.0.tar"), 1)
    answers = await raw(proxy.port, get("/tarballs/huge-1.0.0.tar") * 3 + get("/packages/huge"), 4)
    assert all(b"Server: hexproxy" in a for a in answers)
    for answer in answers[:3]:
        assert answer.endswith(big["tarballs/huge-1.0.0.tar"])
    assert answers[3].endswith(big["packages/huge"])


async def test_a_repeated_head_for_a_pruned_file_goes_back_to_the_policy(
    running: Any, upstream: Upstream
) -> None:
    big = build_repo([PackageSpec("big", "1.0.0", files={"blob": os.urandom(200_000)})], key())
    for path in ("packages/big", "tarballs/big-1.0.0.tar"):
        upstream.repo.publish(path, big[path])
    proxy = await running()
    request = get("/tarballs/big-1.0.0.tar")
    for _ in range(2):  # the miss, then aiohttp's first hit reads the sidecar
        await raw(proxy.port, request, 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        for _ in range(3):
            writer.write(request)
            answer = await read_answer(reader)
            assert b"Server: hexproxy" in answer and answer.endswith(big["tarballs/big-1.0.0.tar"])
        assert proxy.fast is not None and request in proxy.fast.hits  # a repeated head
        proxy.runner.app[CACHE].storage.path(tarball_key("big", "1.0.0")).unlink()
        writer.write(request)  # the same head, on the same connection
        answer = await read_answer(reader)
    finally:
        writer.close()
    assert b"Server: hexproxy" not in answer and b"X-Cache: MISS" in answer
    assert answer.endswith(big["tarballs/big-1.0.0.tar"])
    assert upstream.repo.count("/tarballs/big-1.0.0.tar") == 2


async def test_prepared_answers_live_and_die_with_the_cache_entry(running: Any) -> None:
    """The fast path keeps no answers of its own: what the cache's memory budget drops is
    gone, body and all."""
    proxy = await running()
    cache = proxy.runner.app[CACHE]
    cache._memory.budget = 1  # room for one entry at a time
    held: list[Entry] = []
    for path in ("/packages/alpha", "/packages/beta"):
        await raw(proxy.port, get(path), 1)  # the miss, through aiohttp
        (hit,) = await raw(proxy.port, get(path), 1)
        assert b"Server: hexproxy" in hit
        entry = cache.fresh_entry(package_key(path.rsplit("/", 1)[1]))
        assert isinstance(entry.memo.value, Prepared) and entry.memo.value.body is entry.body
        held.append(entry)
    alpha = held.pop(0)  # beta came in: the cache dropped alpha, with its prepared answer
    assert cache.fresh_entry(package_key("alpha")) is None
    gc.collect()
    assert gc.get_referrers(alpha) == [], "something still holds the dropped entry"
    (again,) = await raw(proxy.port, get("/packages/alpha"), 1)
    assert b"Server: hexproxy" not in again  # back through the policy, from disk


async def test_a_repeated_head_is_never_answered_from_a_replaced_entry(
    running: Any, upstream: Upstream
) -> None:
    """A head answered from memory is answered again from a table of repeated heads, but
    only while the entry it was answered from is the one the cache holds."""
    proxy = await running()
    cache = proxy.runner.app[CACHE]
    old = upstream.repo.files["packages/alpha"]
    plain = get("/packages/alpha")
    await raw(proxy.port, plain, 1)  # the miss, through aiohttp
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:

        async def ask(head: bytes) -> bytes:
            writer.write(head)
            return await read_answer(reader)

        etag = (await ask(plain)).split(b"ETag: ")[1].split(b"\r\n")[0].decode()
        conditional = get("/packages/alpha", f"If-None-Match: {etag}\r\n")
        assert (await ask(conditional)).startswith(b"HTTP/1.1 304")
        assert proxy.fast is not None and {plain, conditional} <= set(proxy.fast.hits)
        repeated = proxy.fast.hits[plain]
        for _ in range(3):  # answered from the table: the same bytes every time
            assert (await ask(plain)).endswith(old)
            assert (await ask(conditional)).startswith(b"HTTP/1.1 304")
        assert proxy.fast.hits[plain] is repeated

        # Upstream publishes a new alpha; the entry's TTL runs out, and a request on
        # another connection revalidates it: the cache now holds a new entry.
        new = build_repo([PackageSpec("alpha", "9.0.0")], key())["packages/alpha"]
        upstream.repo.publish("packages/alpha", new)
        clock = cache.clock
        later(cache, cache.config.cache.registry_ttl + 1)
        (revalidated,) = await raw(proxy.port, plain, 1)
        assert b"Server: hexproxy" not in revalidated and revalidated.endswith(new)
        # Back to the present: by its own deadline the old answer would still be fresh.
        cache.clock = clock

        # The first connection, still on the fast path, sends the very same heads.
        answer = await ask(plain)
        assert b"Server: hexproxy" in answer and answer.endswith(new)
        changed = await ask(conditional)  # the old ETag no longer matches
        assert changed.startswith(b"HTTP/1.1 200") and changed.endswith(new)
    finally:
        writer.close()
    assert upstream.repo.count("/packages/alpha") == 2


def test_accepted_heads_are_remembered_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a head asks depends on its bytes alone, so the fast path reads each distinct
    accepted head once; the table stays bounded, and refused heads are never kept."""
    monkeypatch.setattr(fastpath, "MAX_HEADS", 3)
    fast = FastPath(None, 300.0, None, None)  # type: ignore[arg-type]  # no lookups here
    reader = HeadReader()
    for i in range(10):
        head = get("/packages/alpha", f"User-Agent: mix/{i}\r\n")
        assert fast.read(reader, head) == HeadReader().read(head)
        assert fast.read(reader, head) is fast.read(reader, head)  # remembered
        # Full, it drops the oldest head, one at a time: never everything at once.
        assert len(fast._heads) == min(i + 1, 3)
    refused = b"GET /packages/alpha HTTP/1.1\r\n\r\n"  # no Host
    assert fast.read(reader, refused) is None and refused not in fast._heads
    long_head = get("/packages/alpha", "X-Long: " + "a" * fastpath.REMEMBERED_HEAD + "\r\n")
    assert fast.read(reader, long_head) is not None and long_head not in fast._heads
