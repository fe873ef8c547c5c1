"""Real files: signed by repo.hex.pm itself, and a real Phoenix dependency tree."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hexproxy.airgap.lockfiles import parse_mix_lock
from hexproxy.config import load_config
from hexproxy.web import create_app
from tests.fakes.hex_repo import FakeHexRepo, flip_byte
from tests.support.fixtures import FIXTURES

pytestmark = pytest.mark.real_data


def fixture_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name not in ("public_key", "mix.lock", "hexpm_public_key.pem")
    }


async def start(
    aiohttp_server: Any,
    aiohttp_client: Any,
    files: dict[str, bytes],
    tmp_path: Path,
    keys: dict[tuple[str, str], Any] | None = None,
) -> tuple[FakeHexRepo, Any, TestClient[Any, Any]]:
    repo = FakeHexRepo(files)
    server = await aiohttp_server(repo.app())
    overrides = {
        ("upstream", "url"): str(server.make_url("")).rstrip("/"),
        ("cache", "dir"): str(tmp_path / "cache"),
        **(keys or {}),
    }
    config = load_config(None, {}, overrides)
    client = await aiohttp_client(create_app(config))
    return repo, server, client


async def test_hexpm_signed_files_pass_with_the_default_key(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    files = fixture_files(FIXTURES / "hexpm-signed")
    _, _, proxy = await start(aiohttp_server, aiohttp_client, files, tmp_path)
    for path in ("versions", "packages/exfmt"):
        response = await proxy.get("/" + path)
        assert response.status == 200, await response.text()
        assert await response.read() == files[path]  # byte-identical


@pytest.mark.parametrize("path", ["versions", "packages/exfmt"])
async def test_one_changed_byte_is_refused_with_the_default_key(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, path: str
) -> None:
    files = fixture_files(FIXTURES / "hexpm-signed")
    files[path] = flip_byte(files[path], len(files[path]) // 3)
    _, _, proxy = await start(aiohttp_server, aiohttp_client, files, tmp_path)
    response = await proxy.get("/" + path)
    assert response.status == 502
    assert not (tmp_path / "cache" / "registry" / path).exists()


async def test_phoenix_tree_cold_then_with_upstream_down(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    root = FIXTURES / "phoenix-tree"
    lock = parse_mix_lock((root / "mix.lock").read_text())
    assert len(lock.packages) == 32
    repo, server, proxy = await start(
        aiohttp_server,
        aiohttp_client,
        fixture_files(root),
        tmp_path,
        {("upstream", "public_key"): str(root / "public_key"), ("cache", "registry_ttl"): 0},
    )

    async def resolve_tree() -> None:
        # Like mix: every /packages of the lock, then the tarballs, 8 at a time.
        gate = asyncio.Semaphore(8)

        async def one(path: str) -> bytes:
            async with gate:
                response = await proxy.get(path)
                assert response.status == 200, path
                return await response.read()

        await asyncio.gather(*(one(f"/packages/{p.name}") for p in lock.packages))
        tarballs = await asyncio.gather(
            *(one(f"/tarballs/{p.name}-{p.version}.tar") for p in lock.packages)
        )
        for package, body in zip(lock.packages, tarballs, strict=True):
            assert hashlib.sha256(body).digest() == package.outer_checksum

    await resolve_tree()
    counts = repo.counts()
    assert all(counts[f"/tarballs/{p.name}-{p.version}.tar"] == 1 for p in lock.packages)
    await server.close()  # upstream gone
    await resolve_tree()
