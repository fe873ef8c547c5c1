"""The pieces the workers coordinate with, on real files: lock files that go when their
turn ends without two holders ever sharing a turn, and breakers that share a pause.
(``tests/faults/test_workers_one_fetch.py`` runs them in real worker processes.)"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from pathlib import Path

from hexproxy.store.cachekey import package_key
from hexproxy.store.locks import open_lock, release, still_named, try_lock, turn
from hexproxy.store.statefiles import StateDir
from hexproxy.store.storage import Meta
from hexproxy.upstream.breaker import CircuitBreaker, State
from hexproxy.upstream.pauses import SharedPause
from hexproxy.web.state import CACHE
from tests.conftest import ProxyFactory, Upstream
from tests.support.clock import Clock
from tests.support.waiting import wait_until


async def test_a_lock_file_removed_under_a_waiter_is_not_a_turn(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "tarballs_x.lock"
    polls = 0
    inside = asyncio.Event()
    leave = asyncio.Event()

    def polled() -> None:
        nonlocal polls
        polls += 1

    async def second() -> None:
        async with turn(path, 30.0, polled):
            inside.set()
            await leave.wait()

    async with contextlib.AsyncExitStack() as first:
        await first.enter_async_context(turn(path, 30.0))
        waiter = asyncio.create_task(second())
        await wait_until(lambda: polls > 0, "the second in line waiting")
    # The first holder removed the file as it let go; before the waiter's next poll,
    # another process creates a new one and takes it (what a third worker would do).
    assert not path.exists()
    newcomer = open_lock(path)
    assert try_lock(newcomer) and still_named(newcomer, path)
    seen = polls
    # The waiter locks the file it had open (no longer named), sees that, and waits on
    # the new one: it never enters while the newcomer holds its turn.
    await wait_until(lambda: polls > seen + 5 or inside.is_set(), "the waiter polling again")
    assert not inside.is_set()
    release(newcomer, path)
    await wait_until(inside.is_set, "the waiter's turn")
    leave.set()
    await waiter
    assert not path.exists()


def test_a_pause_one_breaker_opens_holds_for_the_others_until_a_success(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    first, second = (
        CircuitBreaker(2, 600.0, shared=SharedPause(state, "repository")) for _ in range(2)
    )
    first.record_failure("connection refused")
    assert second.allow() and second.state is State.UP  # one failure is not a verdict
    first.record_failure("connection refused")
    assert first.state is State.PAUSED
    assert not second.allow()
    assert second.state is State.PAUSED and second.last_error == "connection refused"
    assert 0 < second.seconds_until_retry() <= 600.0
    # Upstream answered one worker (its probe, say): every worker closes.
    first.record_success()
    assert second.allow() and second.state is State.UP
    assert not (tmp_path / "state" / "pauses" / "repository").exists()


async def test_a_registry_file_another_worker_is_fetching_is_waited_for_boundedly(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(upstream__inflight_wait=0.3)
    cache = proxy.app[CACHE]
    path = cache.storage.lock_path("registry_packages_alpha")
    other_worker = open_lock(path)
    assert try_lock(other_worker)  # what the worker fetching it holds
    try:
        response = await proxy.get("/packages/alpha")
        assert response.status == 503
        assert "being fetched by another worker" in await response.text()
        assert upstream.repo.count("/packages/alpha") == 0
        # That worker stores the file and lets go: this one's waiting flight serves its
        # copy instead of asking upstream again.
        body = upstream.repo.files["packages/alpha"]
        now = time.time()
        meta = Meta(hashlib.sha256(body).hexdigest(), len(body), now, now)
        cache.storage.put(package_key("alpha"), body, meta)
    finally:
        release(other_worker, path)
    await wait_until(lambda: not cache.fetches_running(), "the waiting flight to land")
    response = await proxy.get("/packages/alpha")
    assert (response.status, await response.read()) == (200, body)
    assert upstream.repo.count("/packages/alpha") == 0
    assert not path.exists()


async def test_what_one_worker_heard_from_upstream_another_does_not_ask_again(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    # Two apps on one cache directory: two workers, as far as the cache can tell.
    first, second = await make_proxy(), await make_proxy()
    upstream.repo.fail("500", "/packages/alpha")
    upstream.repo.fail("404", "/tarballs/beta-2.0.0.tar")
    for path, status in (("/packages/alpha", 502), ("/tarballs/beta-2.0.0.tar", 404)):
        assert (await first.get(path)).status == status
        assert upstream.repo.count(path) == 1
        response = await second.get(path)
        assert response.status == status, await response.text()
        assert upstream.repo.count(path) == 1
    assert "backing off" in await (await second.get("/packages/alpha")).text()


async def test_a_builds_host_outage_one_worker_saw_is_not_tried_again_by_another(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    first, second = await make_proxy(), await make_proxy()
    upstream.repo.fail("503", "/installs/hex-1.x.csv")
    for proxy in (first, second):
        response = await proxy.get("/installs/hex-1.x.csv")
        assert response.status == 404  # Hex's "no update information"
        assert upstream.repo.count("/installs/hex-1.x.csv") == 1


def test_when_a_shared_pause_runs_out_one_worker_probes(tmp_path: Path) -> None:
    state, wall, steady = StateDir(tmp_path / "state"), Clock(), Clock(0.0)
    first, second = (
        CircuitBreaker(1, 30.0, steady, shared=SharedPause(state, "repository", wall))
        for _ in range(2)
    )
    first.record_failure("connection refused")
    assert not second.allow()
    for clock in (wall, steady):
        clock.advance(31)
    assert first.allow()  # the probe
    assert not second.allow()  # while the first worker probes, the second holds back
    first.record_failure("connection refused")  # still down: a new pause, for both
    assert not first.allow() and not second.allow()
    for clock in (wall, steady):
        clock.advance(31)
    assert second.allow() and not first.allow()  # whoever asks first probes this time
    second.record_success()
    assert first.allow() and first.state is State.UP
