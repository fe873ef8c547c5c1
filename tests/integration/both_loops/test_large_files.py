"""Large stored files through the fast path, on asyncio's loop and on uvloop's (see this
folder's conftest.py): a 10 MB tarball is more than a socket takes at once, even with the
send buffer the fast path asks for (SEND_BUFFER, which Linux doubles), so its first
sendfile(2) comes back short and the rest goes out from the writer callback. Each body is
checked byte for byte (sha256), whatever the client does meanwhile: read slowly, pipeline
more requests behind it, ask with HEAD or ``Connection: close``, or go away mid-file.

The in-process tests run the proxy on the test's own loop; the ``hexproxy serve`` ones
start it with ``server.event_loop`` set each way (their client runs on asyncio's)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hexproxy.config import Config
from hexproxy.store.cachekey import tarball_key
from hexproxy.web.fastpath import FastPathProtocol
from hexproxy.web.ops import METRICS
from hexproxy.web.server import Running, start
from hexproxy.web.state import CACHE
from tests.conftest import Upstream
from tests.faults.conftest import open_files_under
from tests.support.keys import test_private_key
from tests.support.proxy_process import ProxyProcesses
from tests.support.repo import PackageSpec, build_repo
from tests.support.waiting import HANG_GUARD, wait_until

TARBALL = "/tarballs/huge-1.0.0.tar"
PACKAGE = "/packages/huge"
# A client's receive buffer this small keeps the proxy's sends short: the rest of the
# file waits in the proxy (bounded by its socket's send buffer) until the client reads.
CLIENT_RCVBUF = 16 * 1024
CHUNK = 64 * 1024  # what the slow reader takes per read


@pytest.fixture(scope="module")
def huge() -> dict[str, bytes]:
    blob = random.Random(12).randbytes(10_000_000)  # random: the tarball stays ~10 MB
    return build_repo([PackageSpec("huge", "1.0.0", files={"blob": blob})], test_private_key())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def get(path: str, extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client with a small receive buffer, so the proxy cannot send far ahead of it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock, limit=CHUNK)


async def read_answer(reader: asyncio.StreamReader, *, head_only: bool = False) -> Any:
    """(head, body) of one answer, the body read slowly, CHUNK bytes at a time."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_GUARD)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = bytearray()
    while not head_only and len(body) < length:
        piece = await asyncio.wait_for(reader.read(min(CHUNK, length - len(body))), HANG_GUARD)
        if not piece:
            break  # the proxy closed: a short body
        body += piece
        await asyncio.sleep(0)  # let the proxy run between reads
    return head, bytes(body), length


def publish(upstream: Upstream, huge: dict[str, bytes]) -> None:
    for path in ("packages/huge", "tarballs/huge-1.0.0.tar"):
        upstream.repo.publish(path, huge[path])


@pytest.fixture
async def proxy(
    proxy_config: Callable[..., Config], upstream: Upstream, huge: dict[str, bytes]
) -> AsyncIterator[Running]:
    """The proxy in this process, on the test's loop, with the tarball already known to
    the fast path (a miss, then aiohttp's first hit, both checked)."""
    publish(upstream, huge)
    running = await start(proxy_config(server__listen="127.0.0.1:0"))
    try:
        await warm(running.port, huge)
        yield running
    finally:
        await running.stop()


async def warm(port: int, huge: dict[str, bytes]) -> None:
    """The miss (streamed from upstream), then the first hit: aiohttp's FileResponse, which
    on uvloop (no loop.sendfile) falls back to writing the file in chunks."""
    expected = sha(huge["tarballs/huge-1.0.0.tar"])
    for cache in (b"MISS", b"HIT"):
        reader, writer = await connect(port)
        writer.write(get(TARBALL, "Connection: close\r\n"))
        head, body, _ = await read_answer(reader)
        writer.close()
        assert b"X-Cache: " + cache in head and b"Server: hexproxy" not in head, head
        assert sha(body) == expected, cache


def sending(running: Running) -> list[FastPathProtocol]:
    """Connections with a file part-sent: its first sendfile came back short."""
    return [c for c in running.connections if c.file is not None]


async def test_a_large_file_then_pipelined_requests_in_order(
    proxy: Running, huge: dict[str, bytes]
) -> None:
    tarball = huge["tarballs/huge-1.0.0.tar"]
    reader, writer = await connect(proxy.port)
    writer.write(
        get(TARBALL)
        + get(TARBALL)
        + get(PACKAGE)
        + get(TARBALL, method="HEAD")
        + get(TARBALL, "Connection: close\r\n")
    )
    await wait_until(lambda: sending(proxy), "a short sendfile and the writer sending the rest")
    (connection,) = sending(proxy)
    assert connection.reading_paused  # later requests wait in the kernel meanwhile
    answers = [await read_answer(reader, head_only=i == 3) for i in range(5)]
    rest = await asyncio.wait_for(reader.read(), HANG_GUARD)
    writer.close()
    assert all(b"Server: hexproxy" in head for head, _, _ in answers)
    for i in (0, 1, 4):
        assert sha(answers[i][1]) == sha(tarball), i
    assert answers[2][1] == huge["packages/huge"]
    head, body, length = answers[3]  # HEAD: the length, no body (answer 5 came next)
    assert head.startswith(b"HTTP/1.1 200") and length == len(tarball) and body == b""
    assert b"Connection: close" in answers[4][0] and rest == b""  # closed after the body
    assert connection.dup == -1 and connection.file is None  # nothing left open


async def test_a_file_keeps_reading_paused_through_the_transports_flow_control(
    proxy: Running, huge: dict[str, bytes]
) -> None:
    """The transport saying "write more" mid-file (its own buffer drained) must not let
    the connection read further requests while the file is still being sent."""
    reader, writer = await connect(proxy.port)
    writer.write(get(TARBALL) + get(PACKAGE))
    await wait_until(lambda: sending(proxy), "a file part-sent")
    (connection,) = sending(proxy)
    connection.pause_writing()
    connection.resume_writing()
    assert connection.reading_paused and connection.file is not None
    _, body, _ = await read_answer(reader)
    _, package, _ = await read_answer(reader)
    writer.close()
    assert sha(body) == sha(huge["tarballs/huge-1.0.0.tar"]) and package == huge["packages/huge"]
    assert not connection.reading_paused  # and reading resumed once the file was sent


async def test_a_client_gone_mid_file_costs_only_its_connection(
    proxy: Running, huge: dict[str, bytes], tmp_path: Path
) -> None:
    reader, writer = await connect(proxy.port)
    writer.write(get(TARBALL))
    await wait_until(lambda: sending(proxy), "a file part-sent")
    (connection,) = sending(proxy)
    await reader.readexactly(CHUNK)
    # Gone with a reset, mid-file: the proxy's next send fails.
    writer.transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
    )
    writer.transport.abort()
    await wait_until(lambda: connection.transport is None, "the proxy to drop the connection")
    assert connection.file is None and connection.dup == -1
    await wait_until(lambda: not open_files_under(tmp_path / "cache"), "the file to be closed")
    reader, writer = await connect(proxy.port)  # the next client is served in full
    writer.write(get(TARBALL) + get(PACKAGE))
    head, body, _ = await read_answer(reader)
    _, package, _ = await read_answer(reader)
    writer.close()
    assert b"Server: hexproxy" in head
    assert sha(body) == sha(huge["tarballs/huge-1.0.0.tar"]) and package == huge["packages/huge"]


async def test_a_file_cut_short_on_disk_ends_the_connection(
    proxy: Running, huge: dict[str, bytes]
) -> None:
    """The file shrinks while it is sent: the client gets fewer bytes than the
    Content-Length and then the end of the connection, never a body that looks whole,
    and nothing more on that connection."""
    reader, writer = await connect(proxy.port)
    writer.write(get(TARBALL) + get(PACKAGE))
    await wait_until(lambda: sending(proxy), "a file part-sent")
    path = proxy.runner.app[CACHE].storage.path(tarball_key("huge", "1.0.0"))
    os.truncate(path, 9_000_000)
    head, body, length = await read_answer(reader)
    rest = await asyncio.wait_for(reader.read(), HANG_GUARD)
    writer.close()
    assert b"Server: hexproxy" in head and length == len(huge["tarballs/huge-1.0.0.tar"])
    assert len(body) <= 9_000_000 < length and rest == b""


async def test_a_repeated_head_sends_the_whole_file_every_time(
    proxy: Running, huge: dict[str, bytes]
) -> None:
    """One request at a time on one connection, the same head each time: after the first,
    answered from the fast path's table of repeated heads, still with sendfile(2) and the
    writer for what the socket does not take at once; each answer counted once."""
    assert proxy.fast is not None
    repeats: list[int] = []
    record_repeat = proxy.fast.record_repeat

    def counting(*args: Any) -> None:
        repeats.append(1)
        record_repeat(*args)

    proxy.fast.record_repeat = counting  # type: ignore[method-assign]
    metrics = proxy.runner.app[METRICS]
    before = metrics.totals().value("requests", "/tarballs/{filename}", 200, "HIT")
    reader, writer = await connect(proxy.port)
    try:
        for i in range(5):
            writer.write(get(TARBALL))
            head, body, _ = await read_answer(reader)
            assert b"Server: hexproxy" in head and sha(body) == sha(
                huge["tarballs/huge-1.0.0.tar"]
            ), i
    finally:
        writer.close()
    assert get(TARBALL) in proxy.fast.hits
    # The full lookup runs once a second per head; the rest come from the table.
    assert len(repeats) >= 2
    after = metrics.totals().value("requests", "/tarballs/{filename}", 200, "HIT")
    assert after - before == 5


async def test_aiohttp_sends_large_files_with_sendfile_too(
    proxy_config: Callable[..., Config],
    upstream: Upstream,
    huge: dict[str, bytes],
    tmp_path: Path,
) -> None:
    """With the fast path off, aiohttp answers every hit: sendfile(2) to its socket as
    well (web/sendfile.py), a client reading slowly gets every byte, and one gone
    mid-file leaves nothing open."""
    publish(upstream, huge)
    running = await start(proxy_config(server__listen="127.0.0.1:0", server__fast_path=False))
    expected = sha(huge["tarballs/huge-1.0.0.tar"])
    try:
        await warm(running.port, huge)
        reader, writer = await connect(running.port)
        writer.write(get(TARBALL) + get(PACKAGE))
        head, body, _ = await read_answer(reader)
        _, package, _ = await read_answer(reader)
        assert b"X-Cache: HIT" in head and sha(body) == expected
        assert package == huge["packages/huge"]
        writer.write(get(TARBALL))
        await reader.readexactly(CHUNK)  # then gone with a reset, mid-file
        writer.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        writer.transport.abort()
        await wait_until(lambda: not open_files_under(tmp_path / "cache"), "the file closed")
        reader, writer = await connect(running.port)  # the next client is served in full
        writer.write(get(TARBALL, "Connection: close\r\n"))
        _, body, _ = await read_answer(reader)
        writer.close()
        assert sha(body) == expected
    finally:
        await running.stop()


# --- `hexproxy serve`, on each loop ------------------------------------------------------


@pytest.mark.asyncio(loop_factories=["asyncio"])
@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
async def test_serve_sends_large_files_on_either_loop(
    event_loop: str,
    upstream: Upstream,
    huge: dict[str, bytes],
    tmp_path: Path,
    public_key_file: Path,
) -> None:
    publish(upstream, huge)
    tarball = huge["tarballs/huge-1.0.0.tar"]
    processes = ProxyProcesses(tmp_path / "proxies", public_key_file)
    try:
        process = await processes.start(
            upstream.url, tmp_path / "cache", SERVER_EVENT_LOOP=event_loop
        )
        await warm(process.port, huge)  # aiohttp's answers, FileResponse included
        reader, writer = await connect(process.port)
        writer.write(
            get(TARBALL)
            + get(TARBALL, method="HEAD")
            + get(PACKAGE)
            + get(TARBALL, "Connection: close\r\n")
        )
        answers = [await read_answer(reader, head_only=i == 1) for i in range(4)]
        rest = await asyncio.wait_for(reader.read(), HANG_GUARD)
        writer.close()
        assert all(b"Server: hexproxy" in head for head, _, _ in answers)
        assert sha(answers[0][1]) == sha(answers[3][1]) == sha(tarball)
        assert answers[1][1] == b"" and answers[1][2] == len(tarball)
        assert answers[2][1] == huge["packages/huge"] and rest == b""
        # A client that goes away after 64 KB of 10 MB: the proxy is mid-file (its
        # socket holds at most its send buffer, 8 MiB, and ours takes little).
        reader, writer = await connect(process.port)
        writer.write(get(TARBALL))
        await read_answer(reader, head_only=True)
        await reader.readexactly(CHUNK)
        writer.transport.abort()
        reader, writer = await connect(process.port)
        writer.write(get(TARBALL))
        head, body, _ = await read_answer(reader)
        writer.close()
        assert b"Server: hexproxy" in head and sha(body) == sha(tarball)
        # Stopped (SIGTERM) while a client is mid-file: a clean exit, the body cut short.
        reader, writer = await connect(process.port)
        writer.write(get(TARBALL))
        await read_answer(reader, head_only=True)
        await reader.readexactly(CHUNK)
        codes = await processes.stop_all()
        rest = await asyncio.wait_for(reader.read(), HANG_GUARD)  # to the end
        writer.close()
        assert CHUNK + len(rest) < len(tarball)
    finally:
        codes = await processes.stop_all()
    log = process.log_path.read_text()
    assert codes == [0], process.log_tail()
    assert f"event loop {event_loop})" in log, process.log_tail()
    assert "Traceback" not in log and "Exception" not in log, process.log_tail()
