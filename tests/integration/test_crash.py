"""A proxy killed mid-download leaves no partial entry, and sweeps its temp files at start."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from tests.conftest import Upstream


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_proxy(
    upstream: Upstream, cache: Path, key: Path, port: int
) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hexproxy", "serve",
        "--listen", f"127.0.0.1:{port}",
        "--upstream", upstream.url,
        "--cache-dir", str(cache),
        "--public-key", str(key),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("HEXPROXY_")},
    )  # fmt: skip
    async with aiohttp.ClientSession() as session:
        for _ in range(200):  # up to ~10 s for the interpreter to come up
            try:
                async with session.get(f"http://127.0.0.1:{port}/_hexproxy/health") as r:
                    if r.status == 200:
                        return process
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    process.kill()
    await process.wait()
    raise AssertionError("proxy did not start")


async def test_kill_during_download_leaves_no_partial_entry(
    upstream: Upstream, tmp_path: Path, public_key_file: Path
) -> None:
    cache = tmp_path / "cache"
    port = free_port()
    url = f"http://127.0.0.1:{port}/tarballs/gamma-0.1.0.tar"
    expected = upstream.repo.files["tarballs/gamma-0.1.0.tar"]
    upstream.repo.fail("trickle", "/tarballs/gamma-0.1.0.tar")
    upstream.repo.trickle_delay = 0.01
    proxy = await start_proxy(upstream, cache, public_key_file, port)
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            await response.content.read(64)  # the download is under way
            partial = list((cache / "tmp").iterdir())
            assert partial, "expected a temp file while downloading"
            proxy.send_signal(signal.SIGKILL)
            await proxy.wait()
    except aiohttp.ClientPayloadError:
        pass
    finally:
        if proxy.returncode is None:
            proxy.kill()
            await proxy.wait()
    assert not (cache / "tarballs" / "gamma" / "gamma-0.1.0.tar").exists()

    upstream.repo.heal()
    proxy = await start_proxy(upstream, cache, public_key_file, port)
    try:
        assert list((cache / "tmp").iterdir()) == []  # swept at start
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert await response.read() == expected
        assert (cache / "tarballs" / "gamma" / "gamma-0.1.0.tar").read_bytes() == expected
    finally:
        proxy.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proxy.wait(), 10)
