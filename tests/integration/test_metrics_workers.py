"""``hexproxy serve --workers 2`` reports one set of metrics for the whole server: whichever
worker answers a scrape, counters are the sums over both workers, never drop (not even when
a worker is killed and replaced), and the status page shows the same total."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Upstream
from tests.faults.test_workers import workers_of
from tests.support.proxy_process import ProxyProcess, ProxyProcesses
from tests.support.waiting import wait_until

MAX_REQUESTS = 2000  # bound on the requests sent while waiting for both workers to answer
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def get(port: int, path: str) -> tuple[int, bytes]:
    """One GET on a connection of its own, so the kernel picks a worker for each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def scrape(port: int) -> Samples:
    status, body = await get(port, "/_hexproxy/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def total(samples: Samples) -> int:
    return int(sum(v for (name, _), v in samples.items() if name == "hexproxy_requests_total"))


def per_worker(samples: Samples) -> dict[str, int]:
    """Worker slot -> requests it answered."""
    name = "hexproxy_worker_requests_total"
    return {dict(labels)["worker"]: int(v) for (n, labels), v in samples.items() if n == name}


def live_pids(samples: Samples) -> dict[str, int]:
    """Worker slot -> pid, from hexproxy_worker_info."""
    rows = [dict(labels) for (n, labels), _ in samples.items() if n == "hexproxy_worker_info"]
    return {row["worker"]: int(row["pid"]) for row in rows}


async def spread(
    proxy: ProxyProcess, expected: bytes, enough: Callable[[Samples], bool]
) -> tuple[int, int]:
    """GET /packages/alpha on fresh connections, at least 20 times and until a scrape
    says ``enough``; returns how many GETs and how many scrapes that took."""
    sent = scrapes = 0
    while sent < MAX_REQUESTS:
        status, body = await get(proxy.port, "/packages/alpha")
        assert (status, body) == (200, expected)
        sent += 1
        if sent >= 20 and sent % 10 == 0:
            scrapes += 1
            if enough(await scrape(proxy.port)):
                return sent, scrapes
    raise AssertionError(f"not within {MAX_REQUESTS} requests")


async def test_every_scrape_reports_the_whole_server_and_never_drops(
    upstream: Upstream, proxies: ProxyProcesses, tmp_path: Path
) -> None:
    proxy = await proxies.start(
        upstream.url, tmp_path / "cache", SERVER_WORKERS=2, SERVER_ACCESS_LOG="false"
    )
    await wait_until(lambda: len(workers_of(proxy.pid)) == 2, "two workers")
    expected = upstream.repo.files["packages/alpha"]

    # ``count``: what the next scrape must report. A request is counted once answered,
    # so each scrape reports every request before it, itself excluded.
    count = total(await scrape(proxy.port)) + 1  # start-up health checks, that scrape
    sent, scrapes = await spread(
        proxy, expected, lambda s: len([n for n in per_worker(s).values() if n > 0]) == 2
    )
    count += sent + scrapes

    # Ten scrapes, each on a connection of its own: whichever worker answers, the total
    # is the server's, exactly, so each is above the one before.
    totals = [total(await scrape(proxy.port)) for _ in range(10)]
    assert totals == [count + i for i in range(10)], (totals, count)
    count += 10
    samples = await scrape(proxy.port)
    assert sum(per_worker(samples).values()) == count
    assert set(live_pids(samples).values()) == workers_of(proxy.pid)
    registry_requests = [
        v
        for (n, labels), v in samples.items()
        if n == "hexproxy_requests_total" and dict(labels)["route"] == "/packages/{name}"
    ]
    assert sum(registry_requests) == sent  # both workers' misses and hits of alpha
    count += 1

    status, page = await get(proxy.port, "/_hexproxy/")
    assert status == 200
    shown = re.search(rb"(\d+) requests, ", page)
    assert shown is not None and int(shown.group(1)) == count, page[:3000]
    assert b"2 workers" in page
    count += 1

    # A worker killed with SIGKILL is replaced, and what it counted is not lost.
    before_kill = await scrape(proxy.port)
    assert total(before_kill) == count
    count += 1
    victim_slot, victim = min(live_pids(before_kill).items())
    os.kill(victim, signal.SIGKILL)
    await wait_until(
        lambda: len(workers_of(proxy.pid) - {victim}) == 2, "a new worker in its place"
    )
    after_kill = await scrape(proxy.port)
    assert total(after_kill) == count
    cpu = ("process_cpu_seconds_total", ())
    assert after_kill[cpu] >= before_kill[cpu] > 0
    count += 1

    # The replacement took over the victim's slot and adds to what the victim counted.
    victim_count = per_worker(after_kill)[victim_slot]
    assert victim_count >= per_worker(before_kill)[victim_slot] > 0
    sent, scrapes = await spread(
        proxy, expected, lambda s: per_worker(s)[victim_slot] > victim_count
    )
    count += sent + scrapes
    final = await scrape(proxy.port)
    assert total(final) == count
    assert live_pids(final)[victim_slot] not in (victim, 0)
    assert set(live_pids(final).values()) == workers_of(proxy.pid)
    assert await proxy.stop() == 0
