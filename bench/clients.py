"""Many concurrent downloads of one URL, and a sampler of a process tree's memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp


@dataclass
class Downloads:
    seconds: float
    ok: int = 0  # complete, with exactly the expected sha256
    wrong: int = 0  # complete, but not the expected bytes (must never happen)
    failed: int = 0  # an error status or a broken transfer
    statuses: dict[int, int] = field(default_factory=dict)


async def _one(session: aiohttp.ClientSession, url: str, expected: str, out: Downloads) -> None:
    try:
        async with session.get(url) as resp:
            out.statuses[resp.status] = out.statuses.get(resp.status, 0) + 1
            digest = hashlib.sha256()
            async for chunk in resp.content.iter_chunked(256 * 1024):
                digest.update(chunk)
            if resp.status != 200:
                out.failed += 1
            elif digest.hexdigest() == expected:
                out.ok += 1
            else:
                out.wrong += 1
    except (aiohttp.ClientError, TimeoutError):
        out.failed += 1


async def download_many(url: str, expected_sha256: str, clients: int, seconds: float) -> Downloads:
    """``clients`` simultaneous GETs of ``url``, each on its own connection."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    out = Downloads(seconds=0.0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=seconds), auto_decompress=False
    ) as session:
        start = time.perf_counter()
        await asyncio.gather(*(_one(session, url, expected_sha256, out) for _ in range(clients)))
        out.seconds = time.perf_counter() - start
    return out


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ValueError):
            continue
    return found


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found: list[int] = []
    pending = [pid]
    for _ in range(256):  # a server has a handful of processes; bounded anyway
        if not pending:
            break
        current = pending.pop()
        found.append(current)
        pending += _children(current)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by ``pid`` and its descendants."""
    ticks = 0
    for each in tree_pids(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (shared pages counted in each:
    an upper bound)."""
    total = 0
    for each in tree_pids(pid):
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


class PeakSampler:
    """Samples tree_rss(pid) on a thread every ``interval`` seconds, keeping the peak."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, tree_rss(self.pid))
