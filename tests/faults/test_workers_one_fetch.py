"""``hexproxy serve --workers 4`` acts as one cache: one upstream request per object however
many clients ask at once on whichever workers, one verdict about upstream for all of
them, and no worker left waiting on one that was killed mid-fetch.

Every client request goes over a fresh connection, so the kernel spreads them over the
workers (SO_REUSEPORT); the fake upstream counts what reaches it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest

from hexproxy.registry import public_key_pem
from tests.conftest import Upstream
from tests.integration.test_installs import HEX_OLD, publish_builds_host
from tests.support.keys import other_private_key
from tests.support.proxy_process import ProxyProcess, ProxyProcesses
from tests.support.waiting import wait_until

CLIENTS = 200
WAIT = 30.0  # seconds: a generous bound on every wait (a hang guard, not a timing)
DOCS = b"\x1f\x8b gamma docs" * 100


@pytest.fixture
def installs_key_file(tmp_path: Path) -> Path:
    """The key the fake builds host signs installs CSVs with (tests/integration/test_installs)."""
    path = tmp_path / "installs_key.pem"
    path.write_bytes(public_key_pem(other_private_key().public_key()))
    return path


async def four_workers(
    proxies: ProxyProcesses, upstream: Upstream, cache: Path, **settings: str | float
) -> ProxyProcess:
    return await proxies.start(
        upstream.url,
        cache,
        SERVER_WORKERS=4,
        SERVER_ACCESS_LOG="false",
        UPSTREAM_BUILDS_URL=upstream.url,
        # Generous: on a loaded machine the clients waiting on another worker's fetch
        # must get its bytes, not a 503 asking them to come back.
        UPSTREAM_INFLIGHT_WAIT=WAIT,
        **settings,
    )


async def get_many(url: str, count: int) -> list[tuple[int, bytes]]:
    """``count`` GETs at once, each on its own connection; (0, b"") for a broken one."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, trust_env=False
    ) as session:

        async def one() -> tuple[int, bytes]:
            try:
                async with session.get(url) as response:
                    return response.status, await response.read()
            except aiohttp.ClientConnectionError:
                return 0, b""

        return await asyncio.gather(*(one() for _ in range(count)))


def lock_files(cache: Path) -> list[str]:
    """Lock files left for fetches (the one the evicting process holds lives on)."""
    return sorted(
        p.name for p in (cache / "locks").glob("*.lock") if not p.name.startswith("evict")
    )


async def test_two_hundred_cold_requests_over_four_workers_make_one_upstream_request_each(
    upstream: Upstream, proxies: ProxyProcesses, tmp_path: Path, installs_key_file: Path
) -> None:
    publish_builds_host(upstream)
    upstream.repo.publish("docs/gamma-0.1.0.tar.gz", DOCS)
    cache = tmp_path / "cache"
    proxy = await four_workers(
        proxies, upstream, cache, UPSTREAM_INSTALLS_PUBLIC_KEY=str(installs_key_file)
    )
    files = upstream.repo.files
    objects = {
        "/packages/alpha": files["packages/alpha"],
        "/tarballs/gamma-0.1.0.tar": files["tarballs/gamma-0.1.0.tar"],  # and /packages/gamma
        "/docs/gamma-0.1.0.tar.gz": DOCS,
        "/installs/hex-1.x.csv": files["installs/hex-1.x.csv"],  # and its .signed
        "/installs/1.14.0/hex-2.0.6.ez": HEX_OLD,
    }
    for path, expected in objects.items():
        answers = await get_many(proxy.url + path, CLIENTS)
        wrong = [
            (status, len(body)) for status, body in answers if (status, body) != (200, expected)
        ]
        assert not wrong, (path, wrong[:5], proxy.log_tail())
    assert {path: upstream.repo.count(path) for path in upstream.repo.counts()} == {
        **dict.fromkeys(objects, 1),
        "/packages/gamma": 1,
        "/installs/hex-1.x.csv.signed": 1,
    }
    assert lock_files(cache) == []  # each went when its fetch ended


async def test_a_404_and_a_paused_upstream_learned_by_one_worker_hold_for_all(
    upstream: Upstream, proxies: ProxyProcesses, tmp_path: Path
) -> None:
    proxy = await four_workers(
        proxies,
        upstream,
        tmp_path / "cache",
        UPSTREAM_FAILURE_THRESHOLD=1,
        UPSTREAM_RETRY_AFTER=600,
        CACHE_NEGATIVE_TTL=600,
    )
    # Upstream has no such package: one worker asks, and every worker remembers.
    assert [status for status, _ in await get_many(proxy.url + "/packages/nope", 1)] == [404]
    answers = await get_many(proxy.url + "/packages/nope", 40)
    assert {status for status, _ in answers} == {404}
    assert upstream.repo.count("/packages/nope") == 1

    # Upstream fails: the one failure opens the breaker of the worker that saw it, and
    # the others ask nothing, whichever objects they are asked for.
    upstream.repo.fail("503")
    assert [status for status, _ in await get_many(proxy.url + "/packages/alpha", 1)] == [502]
    asked = len(upstream.repo.requests)
    for path in ("/packages/beta", "/names", "/versions", "/tarballs/beta-2.0.0.tar"):
        answers = await get_many(proxy.url + path, 10)
        assert all(status == 502 and b"paused" in body for status, body in answers), (
            path,
            answers[:3],
        )
    assert len(upstream.repo.requests) == asked, upstream.repo.counts()


async def test_a_worker_killed_mid_fetch_hands_the_fetch_to_the_others(
    upstream: Upstream, proxies: ProxyProcesses, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    proxy = await four_workers(proxies, upstream, cache, UPSTREAM_READ_TIMEOUT=WAIT * 2)
    expected = upstream.repo.files["packages/alpha"]
    upstream.repo.fail("hang", "/packages/alpha")  # the first fetch stalls
    clients = asyncio.create_task(get_many(proxy.url + "/packages/alpha", 24))
    await wait_until(lambda: upstream.repo.count("/packages/alpha") == 1, "the first fetch")
    holder = lock_holder(cache / "locks" / "registry_packages_alpha.lock")
    assert holder in workers_of(proxy.pid)
    upstream.repo.heal()  # from now on upstream answers; the stalled request stays stalled
    os.kill(holder, signal.SIGKILL)

    answers = await asyncio.wait_for(clients, WAIT)
    served = [body for status, body in answers if status != 0]
    # The killed worker's clients lose their connections; every other client gets the
    # file, fetched once more by whichever worker's turn came next.
    assert served and all(body == expected for body in served), answers
    assert upstream.repo.count("/packages/alpha") == 2
    assert lock_files(cache) == []


def lock_holder(path: Path) -> int:
    """The process holding the flock on ``path``, from /proc/locks."""
    inode = path.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1] == "FLOCK" and int(fields[5].rsplit(":", 1)[1]) == inode:
            return int(fields[4])
    raise AssertionError(f"nobody holds {path}")


def workers_of(parent: int) -> set[int]:
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                children.add(int(entry.name))
    return children
