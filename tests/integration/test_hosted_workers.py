"""Concurrent publishes through ``hexproxy serve --workers 2``: serialized across processes.

Each worker process opens the repository on its own; only the lock file in
``hosted.dir`` orders their changes. Twenty publishes at once, spread by the kernel over
both workers, must all be in the final registry, whose signatures verify.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from hexproxy.hosted.keys import digest_of
from hexproxy.registry import load_public_key, verify_package, verify_versions
from tests.support.hosted import package_tarball
from tests.support.proxy_process import ProxyProcesses

pytestmark = pytest.mark.slow

KEY = "workers-key-" + "9" * 40
LIMIT = 1 << 20


async def test_twenty_publishes_across_two_workers_are_all_listed(
    tmp_path: Path, public_key_file: Path
) -> None:
    config = tmp_path / "hexproxy.toml"
    config.write_text(
        f'[hosted]\ndir = "{tmp_path / "hosted"}"\n'
        f'[[hosted.repos]]\nname = "acme"\nwrite_keys = ["{digest_of(KEY)}"]\n'
    )
    proxies = ProxyProcesses(tmp_path / "proxies", public_key_file)
    try:
        proxy = await proxies.start(
            "http://127.0.0.1:9",
            tmp_path / "cache",
            CONFIG=str(config),
            SERVER_WORKERS=2,
            UPSTREAM_OFFLINE="true",
        )
        tars = [package_tarball(f"acme_w{i % 4}", f"2.{i}.0") for i in range(20)]
        async with aiohttp.ClientSession(trust_env=False) as session:

            async def publish(tar: bytes, name: str) -> int:
                async with session.post(
                    f"{proxy.url}/api/repos/acme/packages/{name}/releases",
                    data=tar,
                    headers={"authorization": KEY},
                ) as response:
                    return response.status

            statuses = await asyncio.gather(
                *(publish(tar, f"acme_w{i % 4}") for i, tar in enumerate(tars))
            )
            assert statuses == [201] * 20
            async with session.get(f"{proxy.url}/internal/acme/public_key") as response:
                key = load_public_key(await response.read())
            async with session.get(f"{proxy.url}/internal/acme/versions") as response:
                versions = verify_versions(
                    await response.read(), key, repository="acme", max_uncompressed=LIMIT
                )
            listed = {(e.name, v) for e in versions.packages for v in e.versions}
            assert listed == {(f"acme_w{i % 4}", f"2.{i}.0") for i in range(20)}
            for n in range(4):
                async with session.get(f"{proxy.url}/internal/acme/packages/acme_w{n}") as r:
                    package = verify_package(
                        await r.read(), key, repository="acme", name=f"acme_w{n}",
                        max_uncompressed=LIMIT,
                    )  # fmt: skip
                assert len(package.releases) == 5
        assert await proxies.stop_all() == [0]
    finally:
        await proxies.stop_all()
