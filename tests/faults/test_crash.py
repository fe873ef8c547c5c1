"""SIGKILL the real proxy process in the middle of 50 concurrent cold downloads, restart
it on the same cache: every later answer is correct and nothing partial or bad is stored."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.faults.conftest import ThrottledRepo, cache_problems, get_many, partial_files
from tests.support.keys import test_private_key
from tests.support.repo import PackageSpec, build_repo
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [f"pkg{i}" for i in range(10)]
TARBALL_BYTES = 400 * 1000


@pytest.fixture(scope="module")
def crash_files() -> dict[str, bytes]:
    rng = random.Random(6)
    specs = [
        PackageSpec(name, "1.0.0", files={"priv/blob": rng.randbytes(TARBALL_BYTES)})
        for name in PACKAGES
    ]
    return build_repo(specs, test_private_key())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def proxy_process(
    upstream: str, cache_dir: Path, public_key: Path, log: Path
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """``python -m hexproxy serve`` in its own process group; always gone afterwards."""
    port = _free_port()
    argv = ["-m", "hexproxy", "serve", "--listen", f"127.0.0.1:{port}"]
    argv += ["--upstream", upstream, "--cache-dir", str(cache_dir)]
    argv += ["--public-key", str(public_key)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEXPROXY_")}
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_healthy(url, proc, log)
        yield url, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)


async def _wait_healthy(url: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):  # 30 s at most
            if proc.returncode is not None:
                break
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/_hexproxy/health") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError(f"proxy did not start:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def test_sigkill_mid_download_leaves_only_good_files(
    aiohttp_server: Any, crash_files: dict[str, bytes], public_key_file: Path, tmp_path: Path
) -> None:
    # Upstream sends the first 64 KiB of each tarball, then holds the rest until released.
    release = asyncio.Event()
    repo = ThrottledRepo(dict(crash_files), hold=release)
    server = await aiohttp_server(repo.app())
    upstream = str(server.make_url("")).rstrip("/")
    cache_dir = tmp_path / "cache"
    log = tmp_path / "proxy.log"
    paths = [f"tarballs/{name}-1.0.0.tar" for name in PACKAGES]

    def all_downloading() -> bool:
        temps = partial_files(cache_dir)
        return all(
            any(t.endswith(f"{p.removeprefix('tarballs/')}.part") for t in temps) for p in paths
        )

    async with proxy_process(upstream, cache_dir, public_key_file, log) as (url, proc):
        downloads = [
            asyncio.ensure_future(get_many(f"{url}/{path}", 5, seconds=30)) for path in paths
        ]
        # Kill once every tarball is flowing into its temp file; none can be complete.
        await wait_until(all_downloading, "a temp file for every tarball")
        assert all(0 < repo.sent[p] < TARBALL_BYTES for p in paths), repo.sent
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        release.set()
        answers = [a for batch in await asyncio.gather(*downloads) for a in batch]
    assert len(answers) == 50
    for path, answer in zip([p for p in paths for _ in range(5)], answers, strict=True):
        if answer.status == 200 and answer.body is not None:
            assert answer.body == crash_files[path]
    assert cache_problems(cache_dir, crash_files) == []
    assert partial_files(cache_dir), "the kill was meant to interrupt running downloads"

    async with proxy_process(upstream, cache_dir, public_key_file, log) as (url, _):
        for path in paths:
            again = await get_many(f"{url}/{path}", 3)
            assert all(a.status == 200 and a.body == crash_files[path] for a in again), path
        pkg = await get_many(f"{url}/packages/{PACKAGES[0]}", 1)
        assert pkg[0].body == crash_files[f"packages/{PACKAGES[0]}"]
    assert cache_problems(cache_dir, crash_files) == []
    assert list((cache_dir / "tmp").iterdir()) == []  # the restart swept the partial files
    for path in paths:
        name = path.removeprefix("tarballs/").partition("-")[0]
        assert (cache_dir / "tarballs" / name / path.removeprefix("tarballs/")).exists()
