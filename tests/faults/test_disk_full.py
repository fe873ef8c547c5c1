"""A full disk under the cache: the proxy keeps answering (streaming without storing),
never stores a partial file, and stores again once space is back.

The cache lives on a small tmpfs this test mounts, which needs root (CI runs as root);
elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ProxyFactory
from tests.faults.conftest import (
    ThrottledRepo,
    assert_never_wrong,
    cache_problems,
    get_many,
    settle,
)
from tests.support.keys import test_private_key
from tests.support.repo import PackageSpec, build_repo

TARBALL = "tarballs/big-1.0.0.tar"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the cache needs root (CI runs as root)")
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(mountpoint: Path) -> Path:
    """Take every free byte of the filesystem."""
    filler = mountpoint / "filler"
    with filler.open("wb") as fh:
        for _ in range(10_000):  # 64 KiB at a time: far more than any test tmpfs holds
            try:
                fh.write(b"\0" * 65536)
                fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    return filler


def grow(mountpoint: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=16m", str(mountpoint)], check=True)


@pytest.fixture
def repo() -> ThrottledRepo:
    blob = random.Random(6).randbytes(3 * 1000 * 1000)  # three times the whole disk
    files = build_repo([PackageSpec("big", "1.0.0", files={"priv/blob": blob})], test_private_key())
    return ThrottledRepo(files)


async def test_full_disk_streams_without_storing_then_stores_again(
    tmpfs: Path,
    repo: ThrottledRepo,
    aiohttp_server: Any,
    make_proxy: ProxyFactory,
) -> None:
    server = await aiohttp_server(repo.app())
    upstream = str(server.make_url("")).rstrip("/")
    cache_dir = tmpfs / "cache"
    client = await make_proxy(
        cache__dir=str(cache_dir), upstream__url=upstream, upstream__builds_url=upstream
    )
    filler = fill(tmpfs)

    # Full: registry file and tarball both refused by the disk, yet served.
    for path in ("packages/big", TARBALL):
        answers = await get_many(str(client.make_url("/" + path)), 20)
        assert_never_wrong(answers, repo.files[path])
        assert all(a.status == 200 and a.body == repo.files[path] for a in answers), path
    await settle(cache_dir)
    assert not (cache_dir / "tarballs/big/big-1.0.0.tar").exists()
    assert cache_problems(cache_dir, repo.files) == []

    # Room for the registry file but not for the tarball: still no partial tarball.
    filler.unlink()
    answers = await get_many(str(client.make_url("/" + TARBALL)), 20)
    assert all(a.status == 200 and a.body == repo.files[TARBALL] for a in answers)
    await settle(cache_dir)
    assert not (cache_dir / "tarballs/big/big-1.0.0.tar").exists()
    assert cache_problems(cache_dir, repo.files) == []

    # Space is back: the next miss is stored, whole and verified.
    grow(tmpfs)
    answers = await get_many(str(client.make_url("/" + TARBALL)), 5)
    assert all(a.status == 200 and a.body == repo.files[TARBALL] for a in answers)
    await settle(cache_dir)
    assert (cache_dir / "tarballs/big/big-1.0.0.tar").read_bytes() == repo.files[TARBALL]
    assert cache_problems(cache_dir, repo.files) == []
    with contextlib.suppress(FileNotFoundError):
        assert not any((cache_dir / "tmp").iterdir())
